"""``eigenedit batch``: edit many seeds or images, one PNG per (item, edit), resumable and data-parallel.

The same command runs as one process or under a launcher (one process per GPU, or several CPU processes with the
gloo backend; the output folder must be shared by all machines)::

    eigenedit batch --seeds 0-99 --directions dirs.safetensors --direction 0 --alphas=-2,2 -o out
    accelerate launch --multi_gpu --num_processes 2 -m eigenedit.apps.batch --seeds 0-99 ... -o out

Work is cut into fixed batches of ``batch_size // edits`` items, the same for any number of processes, so an
output's bytes do not depend on how many processes made it (on the same hardware, with the same batch size and
threads per process). Each process takes a contiguous share of the batches still to do, writes its PNGs atomically
and appends one JSON line per finished PNG to its own ``manifest.rank<N>.jsonl``; the main process merges them
into ``manifest.jsonl`` at the end (and at the start, after an interrupted run). An output recorded there with the
same settings and present on disk with the recorded hash is not computed again. The main process holds an
exclusive lock on the output folder for the whole run: a second run into the same folder refuses at once (naming
the other's pid), or waits with ``--wait``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePath

import torch
from PIL import Image
from tqdm.auto import tqdm

from eigenedit.apps.arguments import (  # parse_seeds: also batch.parse_seeds
    add_cg_steps_option,
    common_parser,
    parse_alphas,
    parse_seeds,
    parse_term,
    positive_int,
    run,
)
from eigenedit.apps.guards import (
    OneLineParser,
    check_output_size,
    check_provenance,
    check_schedule,
    note,
    note_placement,
    warn_strengths,
    warn_unreached,
)
from eigenedit.core import operators, sampling
from eigenedit.core.defaults import resolve
from eigenedit.core.directions import Directions
from eigenedit.core.io import atomic_write
from eigenedit.imaging import DEFAULT_RESIZE, RESIZE_MODES, load_image, read_image, to_uint8
from eigenedit.models import DiffusionModel, load_model

MANIFEST = "manifest.jsonl"
LOCK = ".eigenedit-batch.lock"  # flock()ed by the main process of the run writing into the folder; holds its pid
PART = re.compile(r"manifest\.rank(\d+)\.jsonl")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
PNG_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
# record fields that must match the current settings for an output to count as done
KEY_FIELDS = (
    "input",
    "seed",
    "source_sha256",  # not the path: a moved input folder is still done
    "directions",
    "alphas",
    "model",
    "directions_sha256",
    "steps",
    "t_edit",
    "location",
    "asymmetric",
    "operator",
    "cg_steps",
    "scale",
    "resize",
)
UNRECORDED = {"cg_steps": 0}  # the value of a key field that manifests written before it existed meant


@dataclass(frozen=True)
class Item:
    """One starting point: a seed, or a source image (inverted first)."""

    name: str  # output file name stem
    seed: int | None = None
    source: str | None = None
    digest: str | None = None  # sha256 of the source file


@dataclass(frozen=True)
class EditSpec:
    """One edit: the sum of ``alphas[j]`` times direction ``indices[j]``."""

    indices: tuple[int, ...]
    alphas: tuple[float, ...]

    @property
    def tag(self) -> str:
        return "_".join(f"d{i}{format_alpha(a)}" for i, a in zip(self.indices, self.alphas, strict=True))


@dataclass
class Job:
    """Everything a process needs, validated before any file is written."""

    model: DiffusionModel
    directions: Directions  # the union of the directions the edits use, in ``columns`` order
    columns: list[int]  # direction indices (in the file) of the rows of ``directions``
    directions_file: str
    directions_sha256: str
    items: list[Item]
    edits: list[EditSpec]
    output_dir: Path
    steps: int
    t_edit: int
    location: str
    asymmetric: bool
    batch_size: int
    scale: int
    resize: str = DEFAULT_RESIZE  # how source images are fitted to the model (imaging.fit_size)
    operator: str = "shift"  # how a direction acts (eigenedit.core.operators)
    cg_steps: int = 0  # xspace only: conjugate-gradient refinement steps
    notes: tuple[str, ...] = ()  # source images that were converted or resized, for one note line

    def output(self, item: Item, edit: EditSpec) -> str:
        return f"{item.name}__{edit.tag}.png"

    def outputs(self) -> list[str]:
        """Every output name, in manifest order (items, then edits)."""
        return [self.output(item, edit) for item in self.items for edit in self.edits]

    def batches(self) -> list[list[int]]:
        """Item indices per batch: fixed by batch size and edit count, never by the number of processes."""
        per = max(1, self.batch_size // len(self.edits))
        return [list(range(i, min(i + per, len(self.items)))) for i in range(0, len(self.items), per)]

    def alpha_matrix(self) -> torch.Tensor:
        """(edits, columns) weights of each edit on the union of the directions."""
        out = torch.zeros(len(self.edits), len(self.columns))
        for row, edit in enumerate(self.edits):
            for index, alpha in zip(edit.indices, edit.alphas, strict=True):
                out[row, self.columns.index(index)] += alpha
        return out

    def record(self, item: Item, edit: EditSpec, sha256: str | None = None, process: int = 0) -> dict:
        """The manifest line of one output (``sha256`` of the PNG, the ``process`` that wrote it and ``time``)."""
        return {
            "input": "seed" if item.seed is not None else "image",
            "seed": item.seed,
            "source": item.source,
            "source_sha256": item.digest,
            "directions": list(edit.indices),
            "alphas": list(edit.alphas),
            "output": self.output(item, edit),
            "sha256": sha256,
            "model": self.model.model_id,
            "directions_file": self.directions_file,
            "directions_sha256": self.directions_sha256,
            "steps": self.steps,
            "t_edit": self.t_edit,
            "location": self.location,
            "asymmetric": self.asymmetric,
            "operator": self.operator,
            "cg_steps": self.cg_steps,
            "scale": self.scale,
            "resize": self.resize if item.seed is None else None,
            "process": process,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def format_alpha(alpha: float) -> str:
    """Short signed text that still names the exact float: 2.0 -> "+2", 0.1234567 -> "+0.1234567"."""
    text = f"{alpha:+g}"
    return text if float(text) == alpha else f"{alpha:+}"


def parse_edit(text: str) -> EditSpec:
    """``INDEX:ALPHA[,INDEX:ALPHA...]`` -> one (composed) edit."""
    terms = [parse_term(t.strip()) for t in text.split(",") if t.strip()]
    if not terms:
        raise argparse.ArgumentTypeError(f"expected INDEX:ALPHA[,INDEX:ALPHA...], got {text!r}")
    return EditSpec(tuple(i for i, _ in terms), tuple(a for _, a in terms))


def direction_index(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a direction index (0, 1, ...), got {text!r}")
    return int(text)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def output_stem(relative: str) -> str:
    """A file-name-safe stem for an input path: ``cats/001.png`` -> ``cats_001``."""
    stem = str(PurePath(relative.replace("\\", "/")).with_suffix(""))
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "_", stem).strip("._")
    return stem or "image"


def list_images(path: Path) -> list[tuple[str, Path]]:
    """(name as given, path) of one image, every image in a folder (sorted, not recursive), or every image named
    by a list file (one path a line, relative to the list file's folder; blank lines and # comments skipped)."""
    if path.suffix.lower() in IMAGE_SUFFIXES and not path.is_dir():
        return [(path.name, path)]  # a single image
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not found:
            raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {path}")
        return [(p.name, p) for p in found]
    if not path.is_file():
        raise ValueError(f"--images {path}: no such folder or list file")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read list file {path}: {err}") from None
    entries = [line.strip() for line in lines]
    entries = [e for e in entries if e and not e.startswith("#")]
    if not entries:
        raise ValueError(f"list file {path} names no images")
    return [(e, path.parent / e) for e in entries]


def image_items(
    path: Path, shape: tuple[int, int, int], resize: str = DEFAULT_RESIZE, notes: list[str] | None = None
) -> list[Item]:
    """Validate every listed image (readable, convertible to the model's size and mode) and fingerprint it;
    what converting changed is appended to ``notes``."""
    items: list[Item] = []
    names: dict[str, Path] = {}
    files: set[Path] = set()
    for given, file in list_images(path):
        if file.resolve() in files:
            continue  # the same file listed twice
        name = output_stem(given)
        if name in names:
            raise ValueError(f"inputs {names[name]} and {file} would both write {name}__*.png; rename one")
        _, changed = read_image(file, shape, resize)  # a clear ValueError for a missing or unreadable image
        if changed and notes is not None:
            notes.append(f"{file} {changed}")
        names[name] = file
        files.add(file.resolve())
        items.append(Item(name, source=str(file), digest=file_sha256(file)))
    return items


def check_output_dir(path: Path, images: Path | None) -> None:
    if path.exists() and not path.is_dir():
        raise ValueError(f"output folder {path} is a file")
    parent = path.resolve().parent
    if not path.exists() and not parent.is_dir():
        raise ValueError(f"output folder's parent {parent} does not exist")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise ValueError(f"output folder {path if path.exists() else parent} is not writable")
    if images is not None and images.is_dir() and path.exists() and path.resolve() == images.resolve():
        raise ValueError("the output folder must not be the input folder")


def prepare(args, device: torch.device | str) -> Job:
    """Check every input and build the job; raises ValueError (and writes nothing) on bad input."""
    check_output_dir(args.output_dir, args.images)
    edits = list(args.edit or [])
    if args.alphas is not None and not args.direction:
        raise ValueError("--alphas needs --direction INDEX (or give whole edits with --edit INDEX:ALPHA)")
    if not edits and not args.direction:
        raise ValueError("give at least one edit: --direction INDEX [--alphas=-2,2] or --edit INDEX:ALPHA[,...]")
    dfile = Path(args.directions)
    if not dfile.is_file():
        raise ValueError(f"directions file not found: {dfile}")
    model = load_model(args.model, device=str(device))
    names = ("location", "t_edit", "operator", "alphas", "steps")
    settings = resolve(model, **{name: getattr(args, name, None) for name in names})
    if model.image_shape[0] not in PNG_MODES:
        raise ValueError(f"cannot write {model.image_shape[0]}-channel images as PNG")
    check_schedule(model, settings.steps, settings.t_edit)
    check_output_size(model.image_shape, 1, 1, args.scale, "--scale")
    for index in args.direction or []:
        edits.extend(EditSpec((index,), (float(a),)) for a in settings.alphas)
    edits = list({e.tag: e for e in edits}.values())  # the same edit twice would write the same file
    all_dirs = Directions.load(dfile, expect_dim=operators.location_dims(model, settings.location))
    check_provenance(all_dirs, dfile, model.model_id, None, getattr(args, "force", False))
    columns = sorted({i for e in edits for i in e.indices})
    directions = all_dirs.select(columns)
    notes: list[str] = []
    resize = getattr(args, "resize", DEFAULT_RESIZE)
    if args.seeds is not None:
        items = [Item(f"seed{s}", seed=s) for s in args.seeds]
    else:
        items = image_items(args.images, model.image_shape, resize, notes)
    return Job(
        model=model,
        directions=directions,
        columns=columns,
        directions_file=str(dfile),
        directions_sha256=file_sha256(dfile),
        items=items,
        edits=edits,
        output_dir=args.output_dir,
        steps=settings.steps,
        t_edit=int(settings.t_edit),
        location=settings.location,
        asymmetric=args.asymmetric,
        batch_size=args.batch_size,
        scale=args.scale,
        resize=resize,
        notes=tuple(notes),
        operator=settings.operator,
        cg_steps=getattr(args, "cg_steps", 0),
    )


def read_records(path: Path) -> list[dict]:
    """The records of a manifest (part); a line cut short by an interrupted run is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        name = rec.get("output") if isinstance(rec, dict) else None
        if isinstance(name, str) and name and PurePath(name).name == name:
            records.append(rec)
    return records


def merge_manifest(out: Path, order: list[str]) -> int:
    """Merge the per-process parts into ``manifest.jsonl`` (newest record per output, outputs missing on disk
    dropped, this run's outputs first in ``order``), remove the parts, and return how many records they held."""
    parts = sorted((p for p in out.iterdir() if PART.fullmatch(p.name)), key=lambda p: int(PART.fullmatch(p.name)[1]))
    records = {rec["output"]: rec for rec in read_records(out / MANIFEST)}
    added = 0
    for part in parts:
        for rec in read_records(part):
            records[rec["output"]] = rec
            added += 1
    present = {name: rec for name, rec in records.items() if (out / name).is_file()}
    ordered = [present.pop(name) for name in order if name in present] + list(present.values())
    text = "".join(json.dumps(rec) + "\n" for rec in ordered)
    atomic_write(out / MANIFEST, lambda tmp: Path(tmp).write_text(text))
    for part in parts:
        part.unlink()
    return added


def remove_stale_temporaries(out: Path) -> None:
    """Temporary files of writes that a killed run never finished (atomic_write's ``.NAME.*.tmp``)."""
    for tmp in itertools.chain(out.glob(".*.png.*.tmp"), out.glob(f".{MANIFEST}.*.tmp")):
        tmp.unlink(missing_ok=True)


def is_done(job: Job, record: dict | None, item: Item, edit: EditSpec) -> bool:
    """Recorded with the current settings, and on disk with the recorded content."""
    if record is None:
        return False
    want = job.record(item, edit)
    if any(record.get(k, UNRECORDED.get(k)) != want[k] for k in KEY_FIELDS):
        return False
    path = job.output_dir / want["output"]
    return path.is_file() and file_sha256(path) == record.get("sha256")


def pending_batches(job: Job) -> list[tuple[list[int], list[str]]]:
    """(item indices, outputs still to write) of every batch with work left."""
    manifest = {rec["output"]: rec for rec in read_records(job.output_dir / MANIFEST)}
    pending = []
    for indices in job.batches():
        todo = [
            job.output(job.items[i], edit)
            for i in indices
            for edit in job.edits
            if not is_done(job, manifest.get(job.output(job.items[i], edit)), job.items[i], edit)
        ]
        if todo:
            pending.append((indices, todo))
    return pending


def png_bytes(pixels, scale: int) -> bytes:
    """(H, W, C) uint8 -> PNG file bytes, upscaled by ``scale`` (nearest)."""
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, PNG_MODES[pixels.shape[-1]])
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def run_batch(job: Job, indices: list[int], todo: list[str], process: int = 0) -> Iterator[dict]:
    """Compute one batch (all its items x all edits, so its content is fixed) and write the outputs in ``todo``;
    yield the manifest record of each file written."""
    model, items = job.model, [job.items[i] for i in indices]
    if items[0].seed is not None:
        x_t = sampling.noise_from_seeds(model, [item.seed for item in items])
    else:
        images = torch.cat([load_image(item.source, model.image_shape, job.resize) for item in items])
        x_t = sampling.invert(model, model.encode(images), job.steps)
    edit = sampling.Edit(
        directions=job.directions,
        alphas=job.alpha_matrix().repeat(len(items), 1),
        t_edit=job.t_edit,
        location=job.location,
        asymmetric=job.asymmetric,
        operator=job.operator,
        cg_steps=job.cg_steps,
    )
    edited = sampling.edit_images(model, x_t.repeat_interleave(len(job.edits), dim=0), edit, job.steps, job.batch_size)
    pixels = to_uint8(model.decode(edited))
    wanted = set(todo)
    for k, (item, edit) in enumerate(itertools.product(items, job.edits)):
        name = job.output(item, edit)
        if name not in wanted:
            continue
        data = png_bytes(pixels[k], job.scale)
        atomic_write(job.output_dir / name, lambda tmp, data=data: Path(tmp).write_bytes(data))
        yield job.record(item, edit, hashlib.sha256(data).hexdigest(), process)


@contextlib.contextmanager
def folder_lock(out: Path, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the output folder (``fcntl.flock`` on its LOCK file, which holds this pid): where
    another process holds it, a ValueError naming that pid, or with ``wait`` a note and a wait for it."""
    path = out / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            if not wait:
                os.close(fd)
                raise ValueError(
                    f"output folder {out} is in use by another eigenedit batch (pid {owner}); wait for it to finish, "
                    "or pass --wait"
                ) from None
            note(f"output folder {out} is in use by another eigenedit batch (pid {owner}); waiting for it (--wait)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # the holder removes the file when it is done: lock the file that is there now, not the removed one
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        Path(path).unlink(missing_ok=True)
        os.close(fd)


def write_share(job: Job, mine: Iterable[tuple[list[int], list[str]]], part: Path, process: int, bar) -> None:
    """Compute this process's batches and append the record of each output written to its manifest ``part``; an
    OS error (a full disk) is a ValueError naming the file."""
    try:
        with open(part, "a") as log:
            for indices, todo in mine:
                for rec in run_batch(job, indices, todo, process):
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    bar.update()
    except OSError as err:
        raise ValueError(f"cannot write {part}: {err.strerror or err}") from None


def start_run(job: Job, wait: bool, lock: contextlib.ExitStack) -> list[tuple[list[int], list[str]]]:
    """The main process's start: create and lock the output folder (held by ``lock``), clean up after an
    interrupted run and list the batches still to do."""
    out = job.output_dir
    try:
        out.mkdir(exist_ok=True)
        lock.enter_context(folder_lock(out, wait))
        remove_stale_temporaries(out)
        merge_manifest(out, job.outputs())  # parts left by an interrupted run
    except OSError as err:  # a full disk, ...
        raise ValueError(f"cannot write in output folder {out}: {err.strerror or err}") from None
    return pending_batches(job)


def cmd_batch(args) -> None:
    """Validate, shard the batches still to do over the processes, write outputs and merge the manifest."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=args.cpu or not torch.cuda.is_available())
    try:
        job = prepare(args, state.device)
    except ValueError:
        if not state.is_main_process:
            raise SystemExit(2) from None  # every process finds the same problem; the main process reports it
        raise
    out, order = job.output_dir, job.outputs()
    pending, error, created = None, None, not out.exists()
    lock = contextlib.ExitStack()  # the main process's lock on the output folder, held until the manifest is merged
    if state.is_main_process:
        if job.notes:
            more = f" (and {len(job.notes) - 1} more)" if len(job.notes) > 1 else ""
            note(f"{job.notes[0]}{more}" + ("; --resize picks another way" if "resized" in " ".join(job.notes) else ""))
        note_placement(job.directions, job.directions_file, resolve(job.model).layer, job.location)
        try:
            pending = start_run(job, getattr(args, "wait", False), lock)
        except ValueError as err:
            lock.close()
            if created:  # leave no empty folder behind
                with contextlib.suppress(OSError):
                    out.rmdir()
            error = str(err)
        else:
            todo = sum(len(t) for _, t in pending)
            print(
                f"{len(order)} outputs ({len(job.items)} {'seeds' if job.items[0].seed is not None else 'images'} x "
                f"{len(job.edits)} edits): {len(order) - todo} already done, {todo} to write on "
                f"{state.num_processes} process(es) ({state.device})",
                flush=True,
            )
    pending, error = broadcast_object_list([pending, error])
    if error is not None:
        if not state.is_main_process:
            raise SystemExit(2)
        raise ValueError(error)
    with lock:
        start = time.perf_counter()
        with state.split_between_processes(pending) as mine:
            part = out / f"manifest.rank{state.process_index}.jsonl"
            total = sum(len(t) for _, t in mine)
            quiet = not state.is_main_process or not total
            try:
                with tqdm(total=total, desc="batch", unit="img", leave=False, disable=quiet) as bar:
                    write_share(job, mine, part, state.process_index, bar)
            except ValueError:  # e.g. an edit too strong (non-finite images): keep what is done, no empty folder
                if state.num_processes == 1:
                    with contextlib.suppress(ValueError):  # a full disk: the part keeps the records for a re-run
                        merge_manifest(out, order)
                    lock.close()
                    if created and not any(out.glob("*.png")):
                        (out / MANIFEST).unlink(missing_ok=True)
                        with contextlib.suppress(OSError):  # another run may have started in it meanwhile
                            out.rmdir()
                raise
        state.wait_for_everyone()
        elapsed = time.perf_counter() - start
        if state.is_main_process:
            written = merge_manifest(out, order)
            warn_strengths([a for e in job.edits for a in e.alphas], job.model.edit_defaults, job.operator)
            warn_unreached(job.model, job.steps, job.t_edit)
            rate = f" in {elapsed:.2f} s ({written / elapsed:.3f} images/s)" if written else ""
            print(f"wrote {written} images{rate} to {out}; manifest {out / MANIFEST}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def add_batch_parser(sub, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The ``batch`` subcommand (``sub`` is the subparsers object of ``eigenedit``)."""
    p = sub.add_parser(
        "batch",
        parents=parents,
        help="edit many seeds or images -> folder of PNGs + manifest (resumable; accelerate launch for processes)",
        description="One PNG per (seed or image, edit) in the output folder, and manifest.jsonl. A re-run skips "
        "outputs already done. Several processes (GPUs, or CPU processes with gloo): accelerate launch --multi_gpu "
        "--num_processes N -m eigenedit.apps.batch ARGS.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--seeds", type=parse_seeds, help="seeds to generate from, e.g. 0-99 or 0,5,7-9")
    source.add_argument("--images", type=Path, help="an image, a folder of images, or a list file (one path a line)")
    p.add_argument("--directions", type=Path, required=True, help="directions file (eigenedit directions -o)")
    p.add_argument(
        "--edit", type=parse_edit, action="append", metavar="I:A[,I:A...]", help="one edit (terms summed); repeat"
    )
    p.add_argument("--direction", type=direction_index, action="append", help="direction index; repeat")
    p.add_argument("--alphas", type=parse_alphas, default=None, help="alphas of each --direction (default: model's)")
    p.add_argument("--steps", type=positive_int, default=None, help="DDIM steps (default: the model's, else 50)")
    p.add_argument("--t-edit", type=int, default=None, help="edit at timesteps t >= t_edit (default: the model's)")
    p.add_argument("--location", default=None, help="module whose output is shifted (default: the model's)")
    p.add_argument("--asymmetric", action="store_true", help="Asyrp's asymmetric reverse process")
    p.add_argument(
        "--operator", default=None, choices=operators.OPERATORS, help="how a direction acts (default: the model's)"
    )
    add_cg_steps_option(p)
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=16,
        help="images per batch; it fixes how work is grouped, so keep it when resuming or comparing runs",
    )
    p.add_argument("--scale", type=positive_int, default=1, help="upscaling of each PNG")
    p.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default=DEFAULT_RESIZE,
        help="fit --images to the model's size: center-crop (default), pad, stretch, or none (must match)",
    )
    p.add_argument("--force", action="store_true", help="apply a directions file made for another model anyway")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is available")
    p.add_argument(
        "--wait", action="store_true", help="wait for another batch writing into the output folder instead of refusing"
    )
    p.add_argument("-o", "--output-dir", type=Path, required=True, help="output folder (created if missing)")
    p.set_defaults(func=cmd_batch)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m eigenedit.apps.batch ARGS`` is ``eigenedit batch ARGS`` (handy after ``accelerate launch -m``)."""
    parser = OneLineParser(prog="python -m eigenedit.apps")
    add_batch_parser(parser.add_subparsers(), [common_parser()])
    return run(parser.parse_args(["batch", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
