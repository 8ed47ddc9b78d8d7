"""One run per run directory: the hold a live run keeps on its folder.

    RUN_DIR/HOLD.json   {"command", "host", "boot_id", "pids", "since", "job", "token"}

``cohort train`` and ``cohort eval`` take the hold before they start any process, and
release it when they end; a worker's global rank 0 takes it when no launcher of ours did
(a bare ``torchrun``, a SLURM job) and joins its launcher's hold otherwise (the token in
``$COHORT_RUN_HOLD``). A second command on a held folder is refused in one line naming the
holder, so two runs never append to one ``metrics.jsonl`` or resume from one checkpoint.

Why not ``flock``: on NFS and parallel file systems it is unreliable (not forwarded, or
forwarded but lost with a client's lease), and nothing of a lock survives a holder that died.
The hold is a plain file instead, created whole or not at all (written under a temporary
name, then ``link``-ed to HOLD.json, which fails when the name exists: atomic on every
POSIX file system, NFS included), and a hold is *stale*, so a later run takes it over, when

- it was taken on this machine (same host name and boot) and none of its processes is alive
  (each pid is recorded with its start time, so a reused pid does not count);
- it was taken by an earlier run of the same SLURM job (a requeue: SLURM ended that run
  before it started this one);
- otherwise, on another machine, its holder stopped beating: every live holder touches the
  file every ``HEARTBEAT_S``; past ``STALE_AFTER_S`` without a touch it is stale. The age is
  measured between two modification times set by the same clock, the file system's (a probe
  file touched now), so clock skew between nodes does not count.

What the file system must provide (README's reliability section): ``link`` that fails on an
existing name, atomic ``rename``, and modification times set by its server. A holder that
stalls longer than ``STALE_AFTER_S`` (a suspended node) can lose its hold; its heartbeat then
says so, once, on stderr.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
import threading
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cohort.run.directory import HOLD_FILE
from cohort.run.files import RunDirError, make_folder

HOLD_TOKEN_ENV = "COHORT_RUN_HOLD"
"""The token of the hold a launcher took, for its workers to join instead of refusing."""
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0
"""Six missed heartbeats: a holder on another machine silent this long is taken to be dead."""


def boot_id() -> str:
    """This machine's boot, as Linux names it (empty elsewhere): a pid means nothing across reboots."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), or None if it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Holder:
    """Who holds a run directory (the content of HOLD.json)."""

    command: str
    host: str
    boot_id: str
    pids: list[list[int]]
    """[pid, start time] of each process keeping the hold (the launcher, the worker that joined it)."""
    since: str
    job: str
    """The SLURM job id of the holder ($SLURM_JOB_ID), or empty."""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def here(cls, command: str) -> Holder:
        pid = os.getpid()
        return cls(
            command=command,
            host=socket.gethostname(),
            boot_id=boot_id(),
            pids=[[pid, process_start(pid) or 0]],
            since=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            job=os.environ.get("SLURM_JOB_ID", ""),
        )

    def describe(self) -> str:
        if not self.pids:
            return f"{self.command} (of unknown origin; it counts as stale {STALE_AFTER_S:.0f} s after its last change)"
        job = f", SLURM job {self.job}" if self.job else ""
        return f"{self.command} (process {self.pids[0][0]} on {self.host}{job}, since {self.since})"

    def on_this_machine(self) -> bool:
        return self.host == socket.gethostname() and self.boot_id == boot_id()

    def alive_here(self) -> bool:
        """Whether one of its processes still runs (only meaningful ``on_this_machine``)."""
        return any(start and process_start(pid) == start for pid, start in self.pids)


def read_holder(path: Path) -> Holder | None:
    """The hold at ``path``, None when there is none. An unreadable one (damaged by hand: a
    hold is never written in place) counts as a holder that stopped beating."""
    try:
        return Holder(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return Holder("an unreadable HOLD.json", "?", "", [], "?", "", token="")


def stale_reason(holder: Holder, path: Path) -> str | None:
    """Why ``holder`` of the hold at ``path`` is dead (module docstring), or None while it lives."""
    if holder.on_this_machine():
        return None if holder.alive_here() else "its processes are gone"
    job = os.environ.get("SLURM_JOB_ID", "")
    if holder.job and holder.job == job:
        return f"it is an earlier run of this SLURM job {job} (requeued)"
    silent = file_system_now(path.parent) - path.stat().st_mtime
    return f"it has not beaten for {silent:.0f} s" if silent > STALE_AFTER_S else None


def file_system_now(folder: Path) -> float:
    """The time by the file system's clock: the modification time of a probe file touched now."""
    probe = folder / f".{HOLD_FILE}.clock-{uuid.uuid4().hex}"
    probe.touch()
    try:
        return probe.stat().st_mtime
    finally:
        probe.unlink(missing_ok=True)


class RunHold:
    """This process's part in the hold on one run directory; ``acquire`` takes or joins it."""

    def __init__(self, run_dir: Path, holder: Holder, owner: bool, created: Path | None):
        self.run_dir, self.holder, self.owner, self.created = run_dir, holder, owner, created
        self.path = run_dir / HOLD_FILE
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="cohort-run-hold", daemon=True)
        self._beat.start()

    @classmethod
    def acquire(cls, run_dir: str | Path, command: str) -> RunHold:
        """Take the hold on ``run_dir`` (created if missing) for ``command``, or join the one
        our launcher took; raise a RunDirError naming the live holder otherwise."""
        run_dir = Path(run_dir)
        created = next((p for p in [*reversed(run_dir.parents), run_dir] if not p.exists()), None)
        make_folder(run_dir, "run_dir", "choose another run_dir=")
        path, mine = run_dir / HOLD_FILE, Holder.here(command)
        for _ in range(8):  # each turn either takes, joins, refuses or removes a stale hold
            if create_whole(path, mine):
                return cls(run_dir, mine, owner=True, created=created)
            holder = read_holder(path)
            if holder is None:
                continue  # released meanwhile
            if holder.token and holder.token == os.environ.get(HOLD_TOKEN_ENV):
                holder.pids.append(mine.pids[0])
                replace_whole(path, holder)
                return cls(run_dir, holder, owner=False, created=None)
            reason = stale_reason(holder, path)
            if reason is None:
                raise RunDirError(
                    f"{run_dir} is in use by {holder.describe()}; wait for it to end or stop it, "
                    f"or choose another run_dir= (a second run here would write beside it)",
                    shared=False,
                )
            if remove_if_same(path, holder):
                print(f"cohort: took over {path} from {holder.describe()}: {reason}", file=sys.stderr, flush=True)
        raise RunDirError(f"{path} changed hands repeatedly while taking it; retry", shared=False)

    @staticmethod
    def check_free(run_dir: str | Path) -> None:
        """Refuse a run directory that a live run holds (``cohort submit``, which queues a job
        and holds nothing until it starts)."""
        path = Path(run_dir) / HOLD_FILE
        holder = read_holder(path)
        if holder is not None and stale_reason(holder, path) is None:
            raise RunDirError(f"{run_dir} is in use by {holder.describe()}; wait for it to end or stop it")

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            current = read_holder(self.path)
            if current is None or current.token != self.holder.token:
                print(
                    f"cohort: warning: lost the hold on {self.run_dir} (this process stalled for over "
                    f"{STALE_AFTER_S:.0f} s, and {current.describe() if current else 'nobody'} holds it now)",
                    file=sys.stderr,
                    flush=True,
                )
                return
            try:
                os.utime(self.path)  # no times given: NFS sets the server's
            except OSError:
                pass  # the next beat retries

    def release(self) -> None:
        """Stop beating; the owner removes the hold (and the run directory it created, if it is
        still empty). A process that joined leaves it to its launcher."""
        self._stop.set()
        self._beat.join(timeout=5)
        if not self.owner:
            return
        remove_if_same(self.path, self.holder)
        if self.created is not None:
            for folder in [self.run_dir, *self.run_dir.parents]:
                try:
                    folder.rmdir()  # only when empty: the run wrote nothing
                except OSError:
                    break
                if folder == self.created:
                    break

    @contextlib.contextmanager
    def for_children(self):
        """Let the processes started meanwhile (a launcher's workers) join this hold: its token in
        ``$COHORT_RUN_HOLD``, taken out again after."""
        previous = os.environ.get(HOLD_TOKEN_ENV)
        os.environ[HOLD_TOKEN_ENV] = self.holder.token
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(HOLD_TOKEN_ENV, None)
            else:
                os.environ[HOLD_TOKEN_ENV] = previous

    def __enter__(self) -> RunHold:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def create_whole(path: Path, holder: Holder) -> bool:
    """Create ``path`` holding ``holder``, whole, unless it exists; whether it was created."""
    tmp = path.with_name(f".{HOLD_FILE}.{holder.token}.tmp")
    tmp.write_text(json.dumps(asdict(holder)))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def replace_whole(path: Path, holder: Holder) -> None:
    tmp = path.with_name(f".{HOLD_FILE}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(asdict(holder)))
    os.replace(tmp, path)


def remove_if_same(path: Path, holder: Holder) -> bool:
    """Remove the hold at ``path`` if it is still ``holder``'s; whether it was.

    Renamed aside first, then checked: two processes taking over the same stale hold cannot
    both remove it, and one that renamed a hold taken meanwhile puts it back."""
    aside = path.with_name(f".{HOLD_FILE}.{uuid.uuid4().hex}.aside")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = read_holder(aside)
    if moved is not None and moved.token != holder.token:
        try:
            os.link(aside, path)  # not ours: back, unless someone took the name meanwhile
        except FileExistsError:
            pass
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True
