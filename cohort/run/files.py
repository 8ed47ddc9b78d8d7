"""Files written whole or not at all, and read back with one line naming the file and the fix.

Every file of a run directory (``cohort.run.directory``), a checkpoint's parts
(``cohort.run.checkpoint_files``) and ``cohort eval``'s outputs go through here:

* ``replacing`` writes a temporary file next to the target, syncs it and renames it over the
  target, so a crash leaves the old file or the new one, never half of one; ``write_json``
  writes a JSON object that way; ``writing`` turns a file-system error into one line;
* a failed write (a full disk, a quota, a read-only disk) is one ``RunDirError`` line naming
  the disk and the file (``write_error``);
* ``read_json`` reads a JSON object whose keys have the types asked for, or says in one line
  what is wrong with the file and how to fix it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cohort.errors import CohortError


class RunDirError(CohortError, RuntimeError):
    """The run directory cannot hold this run; the message names the fix."""


# --- writing: whole files or nothing ------------------------------------------------------

DISK_FULL = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded"}
"""The errnos of a full disk (or quota), and how the error says it."""

RESUME = "continue with resume=auto"
"""What a training run does once a failed write's cause is fixed (``write_error``'s default)."""


def mount_point(path: Path) -> Path:
    """The mount point of the file system that holds ``path`` (or would, once created)."""
    path = Path(os.path.abspath(path))
    while not os.path.exists(path) and path != path.parent:
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind ``error``: itself, or one in its chain of causes and contexts.
    ``torch.save`` into a Python file reports a failed write as a RuntimeError ("unexpected
    pos 704 vs 598") whose context is the OSError (ENOSPC) the file raised; into a path, its
    C++ writer keeps no errno at all, so ``cohort.run.checkpoint_files.save_part`` passes it a file."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def write_error(path: Path, error: BaseException, then: str = RESUME) -> RunDirError | None:
    """The one-line error for a failed write of ``path`` (a full disk, a quota, a read-only or
    failing disk), or None when no OSError is behind ``error`` (a bug: let it raise). ``then``:
    what to do once the cause is fixed. The rank that writes meets it alone (``shared=False``);
    where every rank takes part in the write, they agree on it first (``cohort.dist.mesh``)."""
    cause = os_error_in(error)
    if cause is None:
        return None
    if cause.errno in DISK_FULL:
        return RunDirError(
            f"{DISK_FULL[cause.errno]} on {mount_point(path)} writing {path}: free space there (or move the run "
            f"directory to a disk with room, run_dir=<there>) and {then}",
            shared=False,
        )
    reason = cause.strerror or type(cause).__name__
    return RunDirError(
        f"cannot write {path} ({reason}): fix that folder or disk (or move the run directory, run_dir=<there>) "
        f"and {then}",
        shared=False,
    )


def file_system_of(path: Path) -> str:
    """``<type> file system at <mount point>`` of the file system that holds ``path`` (or would), or ""."""
    mount = mount_point(path)
    try:
        mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:  # not Linux, or no /proc
        return ""
    types = [fields[2] for fields in mounts if len(fields) > 2 and fields[1].replace("\\040", " ") == str(mount)]
    return f"{types[-1]} file system at {mount}" if types else ""  # the last mount there is the one that shows


def make_folder(
    path: str | Path, what: str, fix: str, error: type[CohortError] = RunDirError, keep: bool = True
) -> None:
    """Create the folder ``path`` and the folders above it (``keep``), or prove that it can be
    created (``keep=False``: what was missing is made and removed again, so nothing is left).
    An existing folder must be one this process may write into.

    The one way a run directory (``RunDir.check``, ``RunHold.acquire``) and a data folder about
    to be written (``cohort.preflight``) are made: reasoning about a path cannot tell a symlink
    loop (ELOOP), a folder under ``/proc`` (ENOENT from mkdir, though the parent exists), a file
    on the way (ENOTDIR), a name too long, no permission or a read-only disk; only creating it
    does. Each is one line of ``error`` naming ``what`` (``run_dir``, ``data.root``), the path,
    errno's message, the file system, and ``fix``, before any process starts."""
    path = Path(path)

    def refused(reason: str, where: Path) -> CohortError:
        system = file_system_of(where)
        return error(f"cannot create {what} {path}: {reason} ({where}{', ' + system if system else ''}); {fix}")

    for attempt in range(8):
        try:
            if os.path.isdir(path):  # follows symlinks: a link to a folder is that folder
                if not os.access(path, os.W_OK):
                    probe = path / f".cohort-probe-{os.getpid()}"
                    os.mkdir(probe)  # os.access does not say why; writing does
                    os.rmdir(probe)
                return
            missing = [p for p in [path, *path.parents] if not os.path.lexists(p)]
            path.mkdir(parents=True, exist_ok=True)
            break
        except OSError as failure:
            # The ranks of a new run check its folder at once: one may remove what it made
            # while another looks or makes it. Nothing in the way: look again.
            where = Path(failure.filename) if failure.filename else path
            blocker = next((p for p in [where, *where.parents] if not_a_folder(p)), None)
            if blocker is None and failure.errno in (errno.EEXIST, errno.ENOENT) and attempt < 7:
                continue
            if blocker is not None and failure.errno in (errno.ENOTDIR, errno.EEXIST):
                raise error(f"cannot create {what} {path}: {blocker} is a file, not a folder; {fix}") from None
            raise refused(failure.strerror or type(failure).__name__, where) from None
    if not keep:
        for folder in missing:  # deepest first; one another process filled meanwhile stays
            try:
                folder.rmdir()
            except OSError:
                break


def not_a_folder(path: Path) -> bool:
    """Whether something other than a folder is at ``path``, from one ``stat`` (``exists`` then
    ``isdir`` would call a folder another rank removed in between a file)."""
    try:
        return not stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:  # nothing there (or a symlink loop, which mkdir's error names)
        return False


def sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a folder's entries are its data). Best effort: some
    file systems cannot open or sync a folder, and then lose nothing a crash of this process
    could; only a machine's crash could undo the rename, never tear the file."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def replacing(path: Path, mode: str = "w", then: str = RESUME, tmp: Path | None = None) -> Iterator[IO]:
    """A file to write ``path``'s new contents into: a temporary file next to it (``tmp``;
    default ``.<name>.tmp``), synced to the disk and renamed over ``path`` when the block ends.
    A crash, of this process or of the machine, leaves the old file or the new one, never
    half of one (the fsync before the rename: without it a machine's crash may keep the
    rename but lose the data, an empty file under the new name). Any failure removes the
    temporary file; a file-system error (a full disk) is a one-line ``write_error``."""
    tmp = tmp or path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        problem = write_error(path, error, then) if isinstance(error, Exception) else None
        if problem is not None:
            raise problem from None
        raise
    sync_folder(path.parent)


@contextmanager
def writing(path: Path, then: str = RESUME) -> Iterator[None]:
    """Turn a file-system error while the block writes ``path`` into a one-line ``write_error``."""
    try:
        yield
    except OSError as error:
        raise write_error(path, error, then) from None


def write_json(path: Path, data: dict, then: str = RESUME, indent: int | None = None) -> None:
    """Write ``data`` as JSON, whole or not at all (``replacing``): a reader never sees half a file."""
    with replacing(path, then=then) as f:
        f.write(json.dumps(data, indent=indent) + "\n")


# --- reading: one line naming the file and the fix ----------------------------------------


def kind_name(kinds: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def fits(value, kinds: type | tuple[type, ...]) -> bool:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool):  # JSON's true is no integer
        return bool in kinds
    return isinstance(value, kinds) or (float in kinds and isinstance(value, int))


def read_json(path: Path, fix: str, keys: dict[str, type | tuple[type, ...]] | None = None, what: str = "") -> dict:
    """The JSON object in ``path``, with each of ``keys`` of its type; else a RunDirError of
    one line naming the file (``what`` it holds) and ``fix``: not readable, not UTF-8, not JSON
    (a torn or damaged file), not an object, a key missing or of the wrong type."""
    path = Path(path)
    name = f"{path} ({what})" if what else str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise RunDirError(f"{name} is not UTF-8 text, so not the JSON cohort wrote; {fix}") from None
    except OSError as error:
        raise RunDirError(f"cannot read {name} ({error.strerror or type(error).__name__}); {fix}") from None
    if not text.strip():
        raise RunDirError(f"{name} is empty; {fix}")
    try:
        data = json.loads(text)
    except ValueError as error:
        where = f" at line {error.lineno} column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
        raise RunDirError(f"{name} is not valid JSON{where}; {fix}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{name} must hold a JSON object, not {type(data).__name__}; {fix}")
    for key, kinds in (keys or {}).items():
        if key not in data:
            raise RunDirError(f"{name} has no key {key}; {fix}")
        if not fits(data[key], kinds):
            shown = repr(data[key])
            shown = shown if len(shown) <= 40 else f"{shown[:40]}..."
            raise RunDirError(f"{name}: {key} must be {kind_name(kinds)}, got {shown}; {fix}")
    return data
