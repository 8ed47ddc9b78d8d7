"""``cohort status RUN_DIR``: where a run stands, from its files and, for a submitted run,
from SLURM (the job's state, its restarts and log paths).

Reads only: safe to call while the run trains.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cohort.dist.node import layout, nodes_of_record
from cohort.run import checkpoint_files
from cohort.run.directory import HOLD_FILE, RunDir
from cohort.run.files import RunDirError, read_json
from cohort.run.hold import read_holder, stale_reason


def slurm_job_line(job_id: str) -> str:
    """The job's state as SLURM's controller knows it, in one line."""
    if shutil.which("scontrol") is None:
        return f"job {job_id}: scontrol is not on PATH here, so its state is unknown"
    shown = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True)
    if shown.returncode != 0:
        return f"job {job_id}: no longer known to SLURM (it ended a while ago, or the controller is unreachable)"
    fields = dict(item.split("=", 1) for item in shown.stdout.split() if "=" in item)
    state = fields.get("JobState", "?")
    reason = fields.get("Reason", "None")
    extra = [f"run time {fields.get('RunTime', '?')}", f"restarts {fields.get('Restarts', '0')}"]
    if reason not in ("None", "(null)"):
        extra.append(f"reason {reason}")
    return f"job {job_id}: {state} ({', '.join(extra)})"


def last_evaluation(rows: list[dict]) -> str | None:
    """The ensemble's and the members' test figures of the newest evaluated epoch."""
    if not rows:
        return None
    epoch = max(row["epoch"] for row in rows)
    split = "test" if any(r["epoch"] == epoch and r["split"] == "test" for r in rows) else "val"
    latest = [r for r in rows if r["epoch"] == epoch and r["split"] == split]
    ensemble = next((r for r in latest if r["member"] == "ensemble"), None)
    members = [r for r in latest if r["member"] != "ensemble"]
    parts = []
    if ensemble:
        figures = " ".join(f"{k} {ensemble[k]:.4f}" for k in ("acc", "nll", "ece") if k in ensemble)
        parts.append(f"ensemble {figures}")
    if members:
        parts.append("members acc " + " ".join(f"{r['acc']:.4f}" for r in sorted(members, key=lambda r: r["member"])))
    return f"last evaluation: epoch {epoch + 1} ({split}): " + "; ".join(parts)


def hold_line(run_dir: Path) -> str:
    """Who uses the run directory now (``cohort.run.hold``): a live holder, a stale one, or nobody."""
    path = run_dir / HOLD_FILE
    holder = read_holder(path)
    if holder is None:
        return "in use: no (no cohort train or eval holds it)"
    reason = stale_reason(holder, path)
    if reason is None:
        return f"in use: by {holder.describe()}"
    return f"in use: no (a stale hold of {holder.describe()} is left: {reason}; the next run takes it over)"


def nodes_line(run: RunDir, replicas: int) -> str | None:
    """Which node each rank of the run's newest start runs (or ran) on, from ``nodes.json``
    (``cohort.dist.node``); None for a run from before it was written."""
    if not run.nodes_file.is_file():
        return None
    fix = "delete it; the run's next start writes it again"
    record = read_json(run.nodes_file, fix, {"ranks": list}, "which node each rank runs on")
    try:
        nodes = nodes_of_record(record)
    except (KeyError, TypeError):
        raise RunDirError(f"{run.nodes_file}: a rank's row lacks its rank, node or host; {fix}") from None
    return f"nodes: {layout(nodes, replicas)}"


def run_status(run_dir: str | Path) -> str:
    """A few lines saying where the run in ``run_dir`` stands."""
    run = RunDir(run_dir)
    config = run.load_config()
    epochs = config.train.epochs
    lines = [
        f"run {run.path}: {config.name}, {config.num_members} member(s) × {config.replicas} replica(s), {epochs} epochs"
    ]

    if run.submission_file.is_file():
        submission = read_json(
            run.submission_file,
            "delete it to see the run's own files without its SLURM job (`cohort submit` writes it)",
            {"job_id": str, "logs": list},
            "the SLURM job that trains the run",
        )
        logs = submission["logs"] or ["(none)"]
        lines.append(slurm_job_line(submission["job_id"]))
        lines.append(f"logs: {logs[0]} (task 0 of {len(submission['logs'])})")

    lines.append(hold_line(run.path))
    nodes = nodes_line(run, config.replicas)
    if nodes is not None:
        lines.append(nodes)
    rows = run.read_metrics()
    evaluated = sorted({row["epoch"] for row in rows})
    newest = checkpoint_files.latest_complete(run.path)
    info = checkpoint_files.read_marker(newest) if newest is not None else None
    if info is not None:
        lines.append(f"newest checkpoint: step {info['step']} ({checkpoint_files.position(info)})")
    else:
        lines.append("newest checkpoint: none yet")
    evaluation = last_evaluation(rows)
    lines.append(evaluation or "last evaluation: none yet")
    done = checkpoint_files.finished(run.path, epochs)
    lines.append(f"finished: {'yes' if done else 'no'} ({len(evaluated)} evaluation(s) logged)")
    return "\n".join(lines)
