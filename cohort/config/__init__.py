"""The typed configuration tree of a cohort run: one ``CohortConfig``, loaded from YAML with
``key=value`` overrides, validated before any process starts, dumped into the run directory.

    schema.py   the root, ``CohortConfig``: its sections, derived meaning and ``validate``
    members.py  members:, batch_ensemble:, teacher:      data.py   data: (and its resolution:)
    optim.py    optim:, schedule:                         loss.py   loss: (one section per term)
    train.py    train:                                    rules.py  the checks that span sections
    exchange.py exchange: (how members read each other)   track.py  track: (W&B, MLflow)
    load.py     load_config, overrides, moved keys, run identity (``same_run_config``)
    tree.py     the generic YAML → dataclass engine       checks.py ConfigError and shared checks
    names.py    the names checked against (architectures, policies, metrics), without torch

The names below are the package's public surface; import them from here.
"""

from cohort.config.checks import ConfigError, refuse_nonfinite
from cohort.config.data import INPUT_SCALINGS, SAMPLE_ORDERS, DataConfig, ResolutionConfig
from cohort.config.exchange import EXCHANGE_MODES, ExchangeConfig
from cohort.config.load import (
    EMPTY_CONFIG_FIX,
    MOVED_KEYS,
    RUN_NEUTRAL_KEYS,
    apply_override,
    first_difference,
    load_config,
    moved_key,
    refuse_moved_keys,
    same_run_config,
)
from cohort.config.loss import (
    MIMICRY_TARGETS,
    CrossEntropyConfig,
    CSKDConfig,
    DistillConfig,
    DiversityConfig,
    FocalConfig,
    KDTermConfig,
    LossConfig,
    MDCAConfig,
    MimicryConfig,
    TermConfig,
)
from cohort.config.members import (
    PERTURBATIONS,
    TEACHER_CHECKPOINTS,
    TEACHER_MAPPINGS,
    BatchEnsembleConfig,
    MemberConfig,
    TeacherConfig,
)
from cohort.config.optim import SCHEDULES, OptimConfig, ScheduleConfig
from cohort.config.schema import CohortConfig
from cohort.config.track import MLFLOW_SCHEMES, WANDB_MODES, MlflowConfig, TrackConfig, WandbConfig
from cohort.config.train import MIN_DIST_TIMEOUT_S, TrainConfig, parse_select_by
from cohort.config.tree import TreeError, build, config_to_dict, dump_config, read_yaml

__all__ = [
    "EMPTY_CONFIG_FIX",
    "EXCHANGE_MODES",
    "INPUT_SCALINGS",
    "MIMICRY_TARGETS",
    "MIN_DIST_TIMEOUT_S",
    "MLFLOW_SCHEMES",
    "MOVED_KEYS",
    "PERTURBATIONS",
    "RUN_NEUTRAL_KEYS",
    "SAMPLE_ORDERS",
    "SCHEDULES",
    "TEACHER_CHECKPOINTS",
    "TEACHER_MAPPINGS",
    "WANDB_MODES",
    "BatchEnsembleConfig",
    "CSKDConfig",
    "CohortConfig",
    "ConfigError",
    "CrossEntropyConfig",
    "DataConfig",
    "DistillConfig",
    "ExchangeConfig",
    "DiversityConfig",
    "FocalConfig",
    "KDTermConfig",
    "LossConfig",
    "MDCAConfig",
    "MemberConfig",
    "MimicryConfig",
    "MlflowConfig",
    "OptimConfig",
    "ResolutionConfig",
    "ScheduleConfig",
    "TeacherConfig",
    "TermConfig",
    "TrackConfig",
    "TrainConfig",
    "TreeError",
    "WandbConfig",
    "apply_override",
    "build",
    "config_to_dict",
    "dump_config",
    "first_difference",
    "load_config",
    "moved_key",
    "read_yaml",
    "refuse_moved_keys",
    "refuse_nonfinite",
    "parse_select_by",
    "same_run_config",
]
