"""`eigenedit evaluate` and `eigenedit directions --report` end to end on a tiny model, and seed parsing."""

import argparse
import json
import textwrap

import pytest

from eigenedit.apps.arguments import parse_seed_spec, parse_seeds

from .conftest import run

TINY = ["--steps", "2", "-k", "2", "--pca-samples", "4", "--no-heads", "--pullback-max-iter", "2"]


@pytest.fixture
def user_probe(tmp_path, monkeypatch):
    """A user's own probe module: brightness and redness of an image."""
    (tmp_path / "my_probe.py").write_text(
        textwrap.dedent(
            """
            from eigenedit.evaluation.probes import Probe

            def read(images):
                return {"brightness": images.mean((1, 2, 3)), "red": images[:, 0].mean((1, 2))}

            def probe():
                return Probe("mine", read, {"brightness": "intensity", "red": "intensity"})
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_probe:probe"


def test_seed_specs():
    assert parse_seed_spec("4") == [0, 1, 2, 3]
    assert parse_seed_spec("1000-1003") == [1000, 1001, 1002, 1003]
    assert parse_seed_spec("0,5,7-9") == [0, 5, 7, 8, 9]
    assert parse_seed_spec("7,") == [7]
    assert parse_seeds("3, 0-2,2") == [3, 0, 1, 2]
    for bad in ("", "0", "a", "-1", "1-", "2-1", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="seed"):
            parse_seed_spec(bad)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "10-x"], "expected seeds"),
        (["--selection-seeds", "0-3", "--test-seeds", "3-6"], "overlap"),
        (["--seeds", "3"], "at least 2"),
        (["--probe", "no_such_module:probe"], "cannot load probe"),
    ],
)
def test_bad_evaluate_input_is_one_line_and_writes_nothing(model_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert run("evaluate", "--model", model_dir, *TINY, "--output-dir", out, *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_evaluate_a_folder_with_a_user_probe(model_dir, tmp_path, capsys, user_probe):
    out = tmp_path / "out"
    seeds = ["--selection-seeds", "0-1", "--test-seeds", "1000-1002", "--pullback-seeds", "2"]
    args = ["--probe", user_probe, "--locations", "mid_block", "mid_block.attentions.0", "--stem", "tiny"]
    assert run("evaluate", "--model", model_dir, *TINY, *seeds, *args, "--output-dir", out) == 0
    runs = json.loads((out / "tiny.json").read_text())
    assert [r["config"]["location"] for r in runs] == ["mid_block", "mid_block.attentions.0"]
    for r in runs:
        assert r["seeds"] == {"selection": [0, 1], "test": [1000, 1001, 1002]}
        assert r["probe"]["name"] == "mine" and r["alpha"] == 1.0
    methods = runs[0]["methods"]
    qk = methods["qk mid_block.attentions.0"]
    assert {"monotonic", "mean_consistency", "mean_linearity", "effect_over_random", "mean_fd"} <= set(qk["summary"])
    assert qk["directions"][0]["probe"]["plus"].keys() == {"brightness", "red"}
    assert methods["pullback"]["seeds"] == [1000, 1001]
    table = (out / "tiny.md").read_text()
    assert "probe: mine" in table and "Test seeds 1000-1002" in table and "selection seeds 0-1" in table
    assert "chosen on the selection seeds" in capsys.readouterr().out


def test_directions_report_prints_label_free_metrics(model_dir, capsys):
    assert run("directions", "--model", model_dir, "-k", "2", "--report", "--report-seeds", "3") == 0
    out = capsys.readouterr().out
    assert "label-free metrics on seeds 0-2" in out and "consist" in out
    assert len([line for line in out.splitlines() if line.strip().startswith(("0 ", "1 "))]) == 2


def test_evaluate_strict_runs_the_protocol(model_dir, tmp_path, monkeypatch, capsys):
    from eigenedit.evaluation import protocol_run

    assert run("evaluate", "--model", model_dir, "--strict", "--output-dir", tmp_path) == 2
    assert "no attribute probe" in capsys.readouterr().err  # refused before the model is even loaded
    seen = []
    monkeypatch.setattr(protocol_run, "main", lambda argv: seen.append(argv))
    assert run("evaluate", "--model", "faces64", "--strict", "--quick", "--output-dir", tmp_path) == 0
    assert seen == [["--model", "faces64", "--output-dir", str(tmp_path), "--quick"]]
