"""Where a run is tracked besides its own files: ``track:`` (Weights & Biases, MLflow).

A tracker is on when its section is set: ``track: {wandb: {project: cifar}}`` in the YAML, or
``track.wandb.project=cifar`` / ``track.mlflow.tracking_uri=file:/path`` on the command line
(``track: {mlflow: {}}`` takes every default). Rank 0 mirrors ``metrics.jsonl`` into the tracked
run, which a resumed or requeued run continues (``cohort.run.tracking``, ``cohort.train.tracking``).
The section is run-neutral (``cohort.config.load.RUN_NEUTRAL_KEYS``): it changes nothing a run
computes, so a tracker may be added to a run when it is resumed, and catches up from its files.
Whether the packages are installed and the servers answer is checked before any process starts
(``cohort.run.tracking.check_trackers``), not here: a config is read without touching the network.
"""

from __future__ import annotations

from dataclasses import dataclass

from cohort.config.checks import ConfigError, choose

WANDB_MODES = ("offline", "online")
"""``offline``: files under ``RUN_DIR/wandb/`` only (``wandb sync`` uploads them later); ``online``: to the server."""

MLFLOW_SCHEMES = ("file:", "sqlite:", "http://", "https://")
"""The tracking URIs cohort can check before a run starts: a local file store, a SQLite
database (needs SQLAlchemy: ``pip install mlflow``), or a tracking server."""


@dataclass
class WandbConfig:
    project: str = ""
    """The W&B project; empty: the run's ``name``."""
    entity: str = ""
    """The W&B team or user that owns the project; empty: the logged-in user's default."""
    mode: str = "offline"
    """``offline`` (default: no network; files under ``RUN_DIR/wandb/``, uploaded later with
    ``wandb sync RUN_DIR/wandb/offline-run-*``) or ``online`` (needs ``wandb login`` and the server)."""

    def validate(self, where: str = "track.wandb") -> None:
        choose(f"{where}.mode", self.mode, WANDB_MODES)


@dataclass
class MlflowConfig:
    tracking_uri: str = ""
    """Where MLflow keeps runs: ``file:/path`` (a local file store), ``sqlite:///path.db``, or
    ``http(s)://host:port`` (a tracking server); empty: a file store in ``RUN_DIR/mlruns``."""
    experiment: str = ""
    """The MLflow experiment (created when missing); empty: the run's ``name``."""

    def validate(self, where: str = "track.mlflow") -> None:
        uri = self.tracking_uri
        if uri and not uri.startswith(MLFLOW_SCHEMES):
            raise ConfigError(
                f"{where}.tracking_uri {uri!r} is not one cohort can use; give file:/path, sqlite:///path.db "
                f"or http(s)://host:port (empty: a file store in the run directory)"
            )


@dataclass
class TrackConfig:
    wandb: WandbConfig | None = None
    """Weights & Biases (``pip install -e .[wandb]``); null: off (``WandbConfig``)."""
    mlflow: MlflowConfig | None = None
    """MLflow (``pip install -e .[mlflow]``); null: off (``MlflowConfig``)."""

    @property
    def trackers(self) -> dict[str, WandbConfig | MlflowConfig]:
        """The trackers that are on, by name (``wandb``, ``mlflow``)."""
        return {name: section for name, section in (("wandb", self.wandb), ("mlflow", self.mlflow)) if section}

    def validate(self) -> None:
        for name, section in self.trackers.items():
            section.validate(f"track.{name}")
