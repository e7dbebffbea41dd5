"""Checked, atomic file writes (``check_writable``, ``atomic_write``): what core needs to save its files (directions,
caches, LoRA files). Images, their formats and grids are ``eigenedit.imaging``."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path

TEMP_NAME_ROOM = 16  # what atomic_write's temporary adds to a file name (".NAME.XXXXXXXX.tmp")
FILE_KINDS = (  # what an output path must not be: only regular files are ever replaced
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str | None:
    """What a non-regular file is ("a character device", ...), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in FILE_KINDS if test(mode)), "not a regular file")


def check_writable(path: str | Path, suffixes: Collection[str] | None = None) -> Path:
    """The one check of an output file, before any expensive work: a ValueError naming ``path`` unless it can be
    written (an existing target is a regular file, the folder exists and a file can be created in it, the name
    is not too long, and its suffix is one of ``suffixes`` when given). Returns the path to write: a symbolic
    link's target, so that the link stays a link."""
    text = os.fspath(path)
    if text in ("", "-"):
        raise ValueError(f"output path {text!r}: writing to standard output is not supported; give a file name")
    if text.endswith(("/", os.sep)):
        raise ValueError(f"output path {text} names a folder; give a file name such as {text}out.png")
    if suffixes is not None and Path(text).suffix.lower() not in suffixes:
        suffix = Path(text).suffix or "no suffix"
        raise ValueError(f"output file {text} has {suffix}; the suffix picks the format: {', '.join(suffixes)}")
    target = Path(os.path.realpath(text))
    try:
        kind = _not_regular(os.stat(target).st_mode)
    except FileNotFoundError:
        kind = None
    except OSError as err:  # a name too long for the system, a loop of links, ...
        raise ValueError(f"cannot write {text}: {err.strerror or err}") from None
    if kind is not None:
        raise ValueError(f"output path {text} is {kind}, not a regular file: refused (only files are replaced)")
    parent = target.parent
    if not parent.is_dir():
        raise ValueError(f"output folder {Path(text).parent} does not exist")
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(target.name.encode()) > name_max - TEMP_NAME_ROOM:
        raise ValueError(
            f"output file name {target.name[:40]}... is too long ({len(target.name.encode())} bytes; at most "
            f"{name_max - TEMP_NAME_ROOM} here)"
        )
    try:  # what atomic_write will do: create a temporary file beside the target (catches /proc, /sys, read-only)
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"cannot write {text}: cannot create a file in {parent}: {err.strerror or err}") from None
    return target


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place with the usual
    permissions: a failed write leaves no partial file, only a regular file (or a link's target) is replaced, and
    an OS error (a full disk, ...) is a ValueError naming ``path``."""
    target = check_writable(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        try:  # checked again just before the rename: something may have appeared since check_writable
            kind = _not_regular(os.lstat(target).st_mode)
        except FileNotFoundError:
            kind = None
        if kind is not None:
            raise ValueError(f"output path {path} is {kind}, not a regular file: refused (only files are replaced)")
        os.replace(tmp, target)
    except OSError as err:
        raise ValueError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
