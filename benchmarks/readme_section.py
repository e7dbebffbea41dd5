"""Replace the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in README.md with a file's content."""

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def replace_section(name: str, content: str, readme: Path = README) -> None:
    text = readme.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:  # the README keeps summaries only; full tables live in results/
        print(f"README.md has no {name} section; the table is in results/ only")
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{content.strip()}\n{end}{tail}")
