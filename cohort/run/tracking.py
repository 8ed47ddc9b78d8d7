"""A run's tracked runs: which ones (``RUN_DIR/tracking.json``), the checks before a run starts,
and attaching to them from the tools that read a run (``cohort eval``, ``cohort report``).

``tracking.json`` holds one entry per tracker that has followed the run: its settings (the
MLflow URI and experiment, the W&B project, entity, mode), the tracked run's id, and
``last_step``, the last global step whose rows it holds. It is written by rank 0 when the
tracked run opens, then after each evaluation it logs (whole, ``write_json``). A run that is
resumed, requeued or evaluated opens the tracked run of its entry again, unless the config
now names another place (another URI or project): that starts a new tracked run there.

The history is kept free of duplicates by the caller, from ``metrics.jsonl``'s rows: every row
carries its global ``step``, and only the rows past the tracked run's last step are logged
(``cohort.train.tracking``). A resume from an earlier checkpoint redoes evaluations the tracked
run may already hold: their rows are skipped, not logged again. They are the same rows, since
resuming is bit-exact, except for the wall-clock figures (``seconds``, ``images_per_s``,
``data_seconds``, ``exchange_seconds``), which keep their first values in the tracker.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from cohort.config import CohortConfig, MlflowConfig, WandbConfig
from cohort.errors import CohortError
from cohort.run.directory import RunDir
from cohort.run.files import read_json, write_json
from cohort.run.trackers import TRACKER_PACKAGES, TRACKERS, Tracker

PROBE_TIMEOUT_S = 5.0
"""How long a tracking server has to answer before a run starts (``check_trackers``)."""

WANDB_SERVER = "https://api.wandb.ai"
"""W&B's server unless ``WANDB_BASE_URL`` names another."""


class TrackingError(CohortError):
    """A tracker that cannot start: its package is missing, or its store or server cannot be reached."""


# --- where each tracker writes ------------------------------------------------------------


def mlflow_uri(section: MlflowConfig, run: RunDir) -> str:
    """The tracking URI, a local path made absolute (every rank, ``cohort eval`` and a requeued
    job may start elsewhere); empty: a file store in ``RUN_DIR/mlruns``."""
    uri = section.tracking_uri or f"file:{run.mlruns}"
    if uri.startswith("file:"):
        return Path(os.path.abspath(local_path(uri))).as_uri()
    if uri.startswith("sqlite:") and local_path(uri) != ":memory:":
        return f"sqlite:///{os.path.abspath(local_path(uri))}"
    return uri


def local_path(uri: str) -> str:
    """The path of a ``file:`` or ``sqlite:`` URI: ``file:runs/x``, ``file:///abs``, ``sqlite:///rel.db``,
    ``sqlite:////abs.db`` (SQLAlchemy's three slashes, then the path)."""
    scheme, rest = uri.split(":", 1)
    if scheme == "sqlite":
        return rest[3:] if rest.startswith("///") else rest
    return urllib.parse.unquote(urllib.parse.urlparse(uri).path if rest.startswith("//") else rest)


def settings(config: CohortConfig, run: RunDir) -> dict[str, dict]:
    """Each tracker that is on, and where it writes (what ``tracking.json`` keeps of it)."""
    found: dict[str, dict] = {}
    for name, section in config.track.trackers.items():
        if isinstance(section, WandbConfig):
            found[name] = {
                "project": section.project or config.name,
                "entity": section.entity,
                "mode": section.mode,
                "dir": str(run.path.resolve()),
            }
        else:
            found[name] = {"tracking_uri": mlflow_uri(section, run), "experiment": section.experiment or config.name}
    return found


# --- before a run starts ------------------------------------------------------------------


def check_trackers(config: CohortConfig, run: RunDir) -> None:
    """Every tracker that is on can start: its package is installed, its store is writable or
    its server answers within ``PROBE_TIMEOUT_S``. One line naming the key and the fix otherwise."""
    for name, where in settings(config, run).items():
        module, extra = TRACKER_PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise TrackingError(
                f"track.{name} is set but the {module} package is not installed in {sys.prefix}; "
                f"pip install -e .[{extra}] (or pip install {module}), or leave track.{name} out"
            )
        if name == "mlflow":
            check_mlflow(where["tracking_uri"], config.track.mlflow.tracking_uri)
        elif where["mode"] == "online":
            check_wandb_online()


def check_mlflow(uri: str, given: str) -> None:
    key = "track.mlflow.tracking_uri" + (f" {given}" if given else " (the run directory's mlruns/)")
    if uri.startswith(("file:", "sqlite:")):
        if uri.startswith("sqlite:") and not all(importlib.util.find_spec(m) for m in ("sqlalchemy", "alembic")):
            raise TrackingError(
                f"{key}: MLflow's SQLite store needs SQLAlchemy and Alembic, which the lightweight "
                f"mlflow-skinny lacks; pip install mlflow, or use a file:/path store"
            )
        path = Path(local_path(uri))
        folder = path if uri.startswith("file:") else path.parent
        existing = next((p for p in [folder, *folder.parents] if p.exists()), Path("/"))
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise TrackingError(f"{key}: cannot write into {existing}; give a writable path")
        return
    probe(f"{uri.rstrip('/')}/health", key, "start the server or fix the URI")


def check_wandb_online() -> None:
    server = os.environ.get("WANDB_BASE_URL", WANDB_SERVER)
    host = urllib.parse.urlparse(server).hostname or ""
    try:
        logged_in = bool(netrc.netrc().authenticators(host))
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    if not (os.environ.get("WANDB_API_KEY") or logged_in):
        raise TrackingError(
            f"track.wandb.mode=online but no W&B API key for {host} (WANDB_API_KEY or ~/.netrc); run `wandb login`, "
            f"or use track.wandb.mode=offline and `wandb sync` later"
        )
    probe(server, "track.wandb.mode=online", "check the network, or use track.wandb.mode=offline")


def probe(url: str, key: str, fix: str) -> None:
    """Raise unless ``url`` answers (any HTTP status) within ``PROBE_TIMEOUT_S``."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(f"{key}: {url} did not answer within {PROBE_TIMEOUT_S:g} s ({reason}); {fix}") from None


ROW_KEYS = ("epoch", "step", "split", "member")
"""What a row of ``metrics.jsonl`` says of itself, rather than measures."""


def tracked_metrics(rows: list[dict], names: list[str], training_keys: list[str]) -> dict[int, dict[str, float]]:
    """``metrics.jsonl`` rows as the tracker's metrics, by global step: ``<split>/<metric>/<member>``
    for every number of a row (members by their configured names, ``config.member_names``),
    ``<split>/<metric>/ensemble-of-<n>`` for the ensembles of n members (``subensembles``),
    ``train/<key>/<member>`` for a member's training figures (one copy: every split's row carries
    them), and ``epoch``. Rows without a step (written by an earlier cohort) are left out."""
    by_step: dict[int, dict[str, float]] = {}
    for row in rows:
        if not isinstance(row.get("step"), int):
            continue
        split, member = row["split"], row["member"]
        who = "ensemble" if member == "ensemble" else names[member] if member < len(names) else str(member)
        metrics = by_step.setdefault(row["step"], {"epoch": float(row["epoch"])})
        for key, value in row.items():
            if key == "subensembles":
                for sub in value:
                    size = sub["size"]
                    metrics.update({f"{split}/{k}/ensemble-of-{size}": float(v) for k, v in sub.items() if k != "size"})
            elif key in ROW_KEYS or not isinstance(value, int | float):
                continue
            elif key in training_keys:
                if split == "val":
                    metrics[f"train/{key}/{who}"] = float(value)
            else:
                metrics[f"{split}/{key}/{who}"] = float(value)
    # ``epoch`` last: MLflow writes a batch in order, and its history of ``epoch`` says how far a
    # tracked run got (``MlflowTracker.logged_step``), so a step cut short is not taken as whole.
    return {step: {**{k: v for k, v in m.items() if k != "epoch"}, "epoch": m["epoch"]} for step, m in by_step.items()}


# --- the record ---------------------------------------------------------------------------


def read_record(run: RunDir) -> dict[str, dict]:
    """``tracking.json``: ``{tracker: entry}`` (none without it)."""
    if not run.tracking_file.is_file():
        return {}
    return read_json(run.tracking_file, "delete it: the next start opens new tracked runs and logs the history again")


def write_record(run: RunDir, record: dict[str, dict]) -> None:
    write_json(run.tracking_file, record, indent=1)


PLACE_KEYS = {"wandb": ("project", "entity"), "mlflow": ("tracking_uri", "experiment")}
"""What makes a tracked run another one. Not W&B's mode (an offline run continues online under its
id) nor its folder (a run directory may move: ``run_dir`` is run-neutral)."""


def same_place(name: str, entry: dict | None, where: dict) -> bool:
    """Whether an entry of ``tracking.json`` tracks to the place ``where`` names (same URI, project...)."""
    return entry is not None and all(entry.get(key) == where.get(key) for key in PLACE_KEYS[name])


def open_tracker(name: str, where: dict, known: dict | None, run: RunDir) -> tuple[Tracker, dict]:
    """Open the tracked run ``known`` names if it tracks to ``where``, else a new one there; the
    tracker and its entry (with ``last_step``, -1 for a new run)."""
    tracker = TRACKERS[name](where)
    known = known if same_place(name, known, where) else None
    entry = tracker.open(known, run.path.resolve().name)
    entry.setdefault("last_step", -1)
    logged = tracker.logged_step() if known else None
    if logged is not None and logged > entry["last_step"]:
        entry["last_step"] = logged  # logged, but the process ended before tracking.json said so
    tracker.note("cohort.run_dir", str(run.path.resolve()))
    return tracker, entry


def attach(run: RunDir) -> list[Tracker]:
    """The tracked runs a finished (or stopped) run wrote to, open for ``cohort eval`` and
    ``cohort report`` to add theirs; a tracker that cannot open is one warning line, skipped."""
    opened = []
    for name, entry in read_record(run).items():
        if name not in TRACKERS:
            continue
        where = {k: v for k, v in entry.items() if k not in ("id", "run_id", "experiment_id", "last_step")}
        if name == "wandb":
            where["dir"] = str(run.path.resolve())  # the folder may have moved since
        try:
            opened.append(open_tracker(name, where, entry, run)[0])
        except Exception as error:  # tracking never stops the tool that reads the run
            warn(name, error)
    return opened


def warn(name: str, error: BaseException) -> None:
    text = (str(error).splitlines() or [""])[0][:200]
    print(
        f"cohort: warning: {name} tracking stopped ({type(error).__name__}: {text}); the run goes on, "
        f"its files hold everything, and the next start (resume=auto, also of a finished run) catches it up",
        file=sys.stderr,
        flush=True,
    )


def each(trackers: list[Tracker], action) -> list[Tracker]:
    """``action(tracker)`` for each tracker; one that fails is warned about once and dropped."""
    alive = []
    for tracker in trackers:
        try:
            action(tracker)
            alive.append(tracker)
        except Exception as error:
            warn(tracker.name, error)
    return alive
