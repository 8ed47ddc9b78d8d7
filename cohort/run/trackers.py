"""The two experiment trackers a run can write to, behind one small interface: Weights & Biases
and MLflow. Each is optional (``pip install -e .[wandb]``, ``.[mlflow]``) and imported only
when a run turns it on (``track:``, ``cohort.config.track``).

A tracker opens the tracked run a run directory names in ``tracking.json`` (``Tracker.open``
with the entry written there), or a new one, and returns the entry to store. Its history is
append-only in both tools, so the caller never logs a step twice (``cohort.run.tracking``):

* MLflow keeps every value logged, a repeated step too (``log_batch`` at step 20 twice leaves
  two entries at step 20 in ``get_metric_history``: run on mlflow-skinny 3.18, file store);
  nothing deletes one. Its history is read back (``logged_step``) to find where it stands.
* W&B drops a step below the run's current one within a process; in offline mode every start
  writes its own ``offline-run-*`` folder with the same run id, which ``wandb sync`` appends to
  one run, and nothing reads the folders back: ``tracking.json`` records the last step logged.

Nothing here phones home in offline use: ``QUIET_ENV`` turns off W&B's git, code and console
capture, its error reports and stats; MLflow's file store needs no network.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

QUIET_ENV = {
    "WANDB_SILENT": "true",
    "WANDB_CONSOLE": "off",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_ERROR_REPORTING": "false",
    "WANDB_INIT_TIMEOUT": "30",
    # MLflow 3.x refuses its file store unless asked: it is in maintenance mode, yet the one
    # store the lightweight mlflow-skinny package can write without a server or SQLAlchemy.
    "MLFLOW_ALLOW_FILE_STORE": "true",
    # A tracking server that stops answering costs seconds, not the minutes of MLflow's
    # default retries (7, with backoff), so the tracking thread frees up and says so.
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "GIT_PYTHON_REFRESH": "quiet",
}
"""Environment set (unless already set) before either package is imported."""

TRACKER_PACKAGES = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
"""Each tracker's module to import and the extra that installs it (``pip install -e .[extra]``)."""


def quiet_environment() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


class Tracker:
    """One tracked run in one tool: opened, written step by step, closed."""

    name = ""

    def __init__(self, settings: dict):
        self.settings = settings
        """What the entry in ``tracking.json`` says of the tool (URI, project, ...), without the run's id."""

    def open(self, known: dict | None, run_name: str) -> dict:
        """Continue the tracked run ``known`` names (an entry of ``tracking.json``), or start one;
        returns the entry to store (the settings and the run's id)."""
        raise NotImplementedError

    def running(self) -> None:
        """Training writes to it (again): MLflow shows the run as running."""

    def logged_step(self) -> int | None:
        """The last step the tracked run holds, read back from the tool; None where it cannot say."""
        return None

    def log(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def params(self, flat: dict[str, str]) -> None:
        """The resolved config, flattened (``members.0.arch``): the run's parameters."""
        raise NotImplementedError

    def note(self, key: str, value: str) -> None:
        """A value that may change between starts (the run directory's path)."""
        raise NotImplementedError

    def artifact(self, path: Path, folder: str) -> None:
        """Keep file ``path`` with the tracked run, under ``folder``; logging it again replaces it."""
        raise NotImplementedError

    def summary(self, metrics: dict[str, float], step: int) -> None:
        """Values of one checkpoint's evaluation (``cohort eval``, which names its step among them),
        once per key and step: MLflow's history at the checkpoint's step, W&B's summary."""
        raise NotImplementedError

    def close(self, status: str | None) -> None:
        """``status``: ``FINISHED``, ``KILLED`` (stopped, to be resumed); None (a tool that read the
        run and added its files): the run's status stays as training left it."""
        raise NotImplementedError


class MlflowTracker(Tracker):
    """MLflow through ``MlflowClient`` (no global active run: a library must not take the
    caller's). ``settings``: ``tracking_uri`` (resolved, ``cohort.run.tracking.mlflow_uri``),
    ``experiment``."""

    name = "mlflow"

    def open(self, known: dict | None, run_name: str) -> dict:
        quiet_environment()
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=self.settings["tracking_uri"])
        if known and known.get("run_id"):
            self.run_id = known["run_id"]
            return known
        experiment = self.client.get_experiment_by_name(self.settings["experiment"])
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(self.settings["experiment"])
        )
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        return {**self.settings, "experiment_id": experiment_id, "run_id": self.run_id}

    def running(self) -> None:
        self.client.update_run(self.run_id, status="RUNNING")

    def logged_step(self) -> int | None:
        history = self.client.get_metric_history(self.run_id, "epoch")
        return max((m.step for m in history), default=None)

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(1000 * time.time())
        entries = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(entries), 1000):  # MLflow's MAX_METRICS_PER_BATCH
            self.client.log_batch(self.run_id, metrics=entries[start : start + 1000], synchronous=True)

    def params(self, flat: dict[str, str]) -> None:
        from mlflow.entities import Param

        entries = [Param(key, value[:6000]) for key, value in flat.items()]  # MAX_PARAM_VAL_LENGTH
        for start in range(0, len(entries), 100):  # MAX_PARAMS_TAGS_PER_BATCH
            self.client.log_batch(self.run_id, params=entries[start : start + 100], synchronous=True)

    def note(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def artifact(self, path: Path, folder: str) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def summary(self, metrics: dict[str, float], step: int) -> None:
        first = next(iter(metrics), None)
        if first is None or any(m.step == step for m in self.client.get_metric_history(self.run_id, first)):
            return  # logged by an earlier `cohort eval` of this checkpoint
        self.log(metrics, step)

    def close(self, status: str | None) -> None:
        if status is not None:
            self.client.set_terminated(self.run_id, status=status)


class WandbTracker(Tracker):
    """W&B through ``wandb.init`` (offline by default, its files under ``RUN_DIR/wandb/``).
    ``settings``: ``project``, ``entity``, ``mode``, ``dir`` (the run directory)."""

    name = "wandb"

    def open(self, known: dict | None, run_name: str) -> dict:
        quiet_environment()
        import wandb

        run_id = known["id"] if known and known.get("id") else uuid.uuid4().hex[:8]
        self.wandb = wandb
        self.run = wandb.init(
            project=self.settings["project"],
            entity=self.settings["entity"] or None,
            mode=self.settings["mode"],
            dir=self.settings["dir"],
            id=run_id,
            name=run_name,
            resume="allow",
            settings=wandb.Settings(console="off", x_disable_stats=True, x_disable_meta=True, save_code=False),
            reinit="create_new",
        )
        return {**(known or {}), **self.settings, "id": run_id}

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def params(self, flat: dict[str, str]) -> None:
        self.run.config.update(flat, allow_val_change=True)

    def note(self, key: str, value: str) -> None:
        self.run.config.update({key: value}, allow_val_change=True)

    def artifact(self, path: Path, folder: str) -> None:
        # Into the run's files folder (under RUN_DIR/wandb/), which `wandb sync` uploads: a W&B
        # Artifact would be staged outside the run directory, in the user's data folder.
        target = Path(self.run.dir) / folder / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        self.run.save(str(target), base_path=self.run.dir, policy="now")

    def summary(self, metrics: dict[str, float], step: int) -> None:
        # A step below the run's last would be dropped from the history: the summary holds
        # one value per key, and a second `cohort eval` of the checkpoint replaces it.
        self.run.summary.update(metrics)

    def close(self, status: str | None) -> None:
        self.run.finish(exit_code=1 if status == "KILLED" else 0)


TRACKERS: dict[str, type[Tracker]] = {"wandb": WandbTracker, "mlflow": MlflowTracker}


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """A config tree as ``{dotted.key: value}``, values as JSON writes them (``0.1``, ``true``, ``[]``)."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, value in tree.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    if isinstance(tree, list) and tree:
        return {k: v for i, value in enumerate(tree) for k, v in flatten(value, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): tree if isinstance(tree, str) else json.dumps(tree)}
