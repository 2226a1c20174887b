"""The folder ``gpufleet render --out DIR`` writes: what it may replace, and how.

gpufleet replaces only a folder it made itself. Every render ends by writing
``DIR/.gpufleet-render`` (JSON: format version, gpufleet version, the fleet
file, and the SHA-256 of every file it wrote); a folder without that marker,
or holding anything the marker does not list (a file a user dropped in, an
edited file, a symbolic link), is refused with a line naming what was found.
The fleet's own inputs (the stacks folder, each inventory, the project root,
anything that contains them) and any folder holding ``.git`` are refused
before anything else is looked at.

The new output is built in a sibling folder ``.DIR.gpufleet-new-XXXX``, marked
at once with ``.gpufleet-render-tmp`` (the process that builds it), and swapped
in with two renames: ``DIR`` to ``.DIR.gpufleet-old-XXXX``, the new folder to
``DIR``. The old folder is then removed file by file, only the files its
marker lists, marker last. A render killed at any point therefore leaves only
sibling folders that gpufleet named and marked; the next render into ``DIR``
removes them (a temporary folder only once the process that made it is gone).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gpufleet import __version__
from gpufleet.errors import FleetError, Problem

MARKER = ".gpufleet-render"
TMP_MARKER = ".gpufleet-render-tmp"
FORMAT = 1
NEW, OLD = "gpufleet-new-", "gpufleet-old-"


@dataclass(frozen=True)
class Inputs:
    """The folders a render reads; none of them, nor what holds them, may be replaced."""

    stacks: Path
    project: Path
    inventories: tuple[Path, ...]


class Refused(FleetError):
    def __init__(self, shown: str, message: str):
        super().__init__([Problem(shown, "", message)])


# ------------------------------------------------------------------ what DIR is


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_target(out: Path, inputs: Inputs, shown: str | None = None) -> None:
    """Raise :class:`Refused` unless ``out`` is new, empty, or an unchanged earlier render.

    ``out`` is absolute; ``shown`` is the folder as the user named it, for messages.
    """
    shown = shown or str(out)
    if out.is_symlink():
        raise Refused(shown, "is a symbolic link; give the folder it points to, or a new folder")
    real = out.resolve()
    named = [(inputs.project, "the fleet's project folder"), (inputs.stacks, "the fleet's stacks folder")]
    named += [(inv, f"the inventory {inv.name}") for inv in inputs.inventories]
    for folder, what in named:
        folder = folder.resolve()
        if real == folder:
            raise Refused(shown, f"is {what}; render writes a folder of its own (e.g. --out out)")
        if _inside(folder, real):
            raise Refused(shown, f"holds {what} ({folder}); render replaces its folder as a whole, so it must not hold the fleet's inputs")
    for folder, what in named[1:]:
        if _inside(real, folder.resolve()):
            raise Refused(shown, f"is inside {what}, which the engines read as input; write the render outside it (e.g. --out out)")
    if not out.exists():
        return
    if not out.is_dir():
        raise Refused(shown, "exists and is not a folder")
    if (out / ".git").exists():
        raise Refused(shown, "holds a git repository (.git); render replaces its folder as a whole: choose a new folder")
    if not any(out.iterdir()):
        return
    marker = read_marker(out)
    if marker is None:
        if (out / "plan.json").exists():
            raise Refused(shown, f"has no {MARKER} marker (a render by an older gpufleet, or not a render at all); gpufleet replaces only folders it marked: remove it yourself (rm -r {shown}) or choose a new folder")
        raise Refused(shown, f"exists and is not a gpufleet render output (no {MARKER} marker); choose an empty or new folder")
    foreign = foreign_entry(out, marker)
    if foreign:
        raise Refused(shown, f"{foreign}; render would delete it: move it out of {shown} or choose a new folder")


def read_marker(folder: Path) -> dict | None:
    path = folder / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), dict) or not isinstance(data.get("dirs", []), list):
        return None
    return data


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def foreign_entry(folder: Path, marker: dict) -> str | None:
    """The first thing in ``folder`` its marker does not account for, as a sentence; None if none."""
    files: dict = marker["files"]
    dirs = set(marker.get("dirs", []))
    for top, dirnames, filenames in os.walk(folder):
        base = Path(top)
        for name in sorted(dirnames):
            rel = (base / name).relative_to(folder).as_posix()
            if (base / name).is_symlink():
                return f"{folder / rel} is a symbolic link gpufleet did not write"
            if rel not in dirs:
                return f"{folder / rel}/ was not written by gpufleet render"
        for name in sorted(filenames):
            path = base / name
            rel = path.relative_to(folder).as_posix()
            if rel in (MARKER, TMP_MARKER) and base == folder:
                continue
            if path.is_symlink() or not path.is_file():
                return f"{path} is not a file gpufleet wrote"
            if rel not in files:
                return f"{path} was not written by gpufleet render"
            if _sha256(path) != files[rel]:
                return f"{path} was changed after gpufleet wrote it"
    return None


# ------------------------------------------------------------- building and swapping


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (clock ticks after boot), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _start_time(pid)
    return start is None or now is None or now == start


def new_folder(out: Path) -> Path:
    """A fresh sibling folder of ``out``, marked at once as this process's temporary render."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{NEW}", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would become DIR's mode
    owner = {"format": FORMAT, "pid": os.getpid(), "start": _start_time(os.getpid()), "target": out.name}
    (tmp / TMP_MARKER).write_text(json.dumps(owner) + "\n")
    return tmp


def finish(tmp: Path, fleet_file: Path) -> None:
    """Write the marker listing every file of ``tmp`` (last, after all of them), then drop the temporary mark."""
    files: dict[str, str] = {}
    dirs: list[str] = []
    for top, dirnames, filenames in os.walk(tmp):
        base = Path(top)
        dirs.extend((base / d).relative_to(tmp).as_posix() for d in dirnames)
        for name in filenames:
            rel = (base / name).relative_to(tmp).as_posix()
            if rel not in (MARKER, TMP_MARKER):
                files[rel] = _sha256(base / name)
    marker = {"format": FORMAT, "gpufleet": __version__, "fleet": str(fleet_file.resolve()), "dirs": sorted(dirs), "files": dict(sorted(files.items()))}
    (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
    (tmp / TMP_MARKER).unlink()


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (the parent of DIR) while folders beside DIR change."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def swap(tmp: Path, out: Path, inputs: Inputs, shown: str | None = None) -> list[str]:
    """Put ``tmp`` in place of ``out`` with two renames; returns warnings about what was left."""
    with _locked(out.parent):
        check_target(out, inputs, shown)  # again: the folder may have changed while the render ran
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.{OLD}{tmp.name.rsplit(NEW, 1)[-1]}"
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            if old is not None:
                os.rename(old, out)  # put the earlier render back
            raise
    if old is not None and not remove_render(old):
        return [f"{old}: the previous render could not be removed completely; the next render into {out} retries"]
    return []


# ------------------------------------------------------------------ removing


def remove_render(folder: Path) -> bool:
    """Remove a marked render: only the files and folders its marker lists, the marker last."""
    marker = read_marker(folder)
    if marker is None or foreign_entry(folder, marker):
        return False
    for rel in marker["files"]:
        with contextlib.suppress(FileNotFoundError):
            (folder / rel).unlink()
    for rel in sorted(marker.get("dirs", []), key=lambda d: d.count("/"), reverse=True):
        with contextlib.suppress(FileNotFoundError):
            (folder / rel).rmdir()
    with contextlib.suppress(FileNotFoundError):
        (folder / TMP_MARKER).unlink()
    (folder / MARKER).unlink()
    try:
        folder.rmdir()
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


def remove_tmp(tmp: Path) -> None:
    """Remove a temporary render folder of this or a dead process, its temporary marker last."""
    for child in tmp.iterdir():
        if child.name == TMP_MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    with contextlib.suppress(FileNotFoundError):
        (tmp / MARKER).unlink()
    with contextlib.suppress(FileNotFoundError):
        (tmp / TMP_MARKER).unlink()
    tmp.rmdir()


def _tmp_owner(folder: Path) -> dict | None:
    path = folder / TMP_MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def remove_stale(out: Path) -> list[str]:
    """Remove what earlier killed renders into ``out`` left beside it; returns what was removed."""
    removed: list[str] = []
    if not out.parent.is_dir():
        return removed
    with _locked(out.parent):
        for entry in sorted(out.parent.iterdir()):
            if not any(entry.name.startswith(f".{out.name}.{kind}") for kind in (NEW, OLD)) or entry.is_symlink() or not entry.is_dir():
                continue
            owner = _tmp_owner(entry)
            if owner is not None:
                if owner.get("target") == out.name and not _alive(owner["pid"], owner.get("start")):
                    remove_tmp(entry)
                    removed.append(str(entry))
            elif read_marker(entry) is not None and remove_render(entry):
                removed.append(str(entry))
    return removed
