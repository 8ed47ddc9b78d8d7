"""Reading a config: the YAML file, ``key=value`` overrides, keys of an earlier format, and
whether two dumped configs describe the same run (``resume=auto`` continues only that)."""

from __future__ import annotations

import copy
from pathlib import Path

from cohort.config.checks import ConfigError
from cohort.config.schema import CohortConfig
from cohort.config.tree import apply_override as apply_tree_override
from cohort.config.tree import build, read_yaml


def load_config(path: str | Path, overrides: list[str] = ()) -> CohortConfig:
    """Read a YAML config, apply ``key=value`` overrides, build the tree, fill in what it derives
    (``CohortConfig.resolve``) and validate it."""
    path = Path(path)
    if not path.exists():
        if path.name in RENAMED_CONFIGS:
            new, why = RENAMED_CONFIGS[path.name]
            raise ConfigError(f"config file {path} was renamed {path.with_name(new)} ({why}); train that one")
        raise ConfigError(f"config file {path} does not exist; pick one from configs/")
    raw = read_yaml(path, ConfigError, empty=EMPTY_CONFIG_FIX)
    for override in overrides:
        apply_override(raw, override)
    refuse_moved_keys(raw)
    config = build(CohortConfig, raw, "", ConfigError)
    config.resolve()
    config.validate()
    return config


RENAMED_CONFIGS = {
    "cifar100_resnet34x3_diffdml.yaml": (
        "cifar100_resnet34x3_diffdml_aug.yaml",
        "Diff-DML as the summary reads it, our formulation; the code's recipe is "
        "cifar100_diffdml_resnet34_resnet18.yaml",
    ),
}
"""Shipped configs that moved, by file name: the new name and why. ``digits_diffdml.yaml`` and
``fashion_diffdml.yaml`` kept their names for the code's recipe (their summary's reading moved to
``*_diffdml_aug.yaml``): the name of the code's recipe is Diff-DML's."""

EMPTY_CONFIG_FIX = "write the run's keys into it (start from a copy of configs/demo.yaml), or {} to train every default"
"""What an empty config file's error suggests: a file with no keys is more often a mistake than a wish for defaults."""


MOVED_KEYS = {
    "mimicry": "loss.mimicry",
    "diversity": "loss.diversity",
    "train.label_smoothing": "loss.ce.label_smoothing",
}
"""Keys of config format 1 (before the objective's terms were grouped under ``loss:``)."""


def moved_key(raw: dict) -> str | None:
    """The first key of ``MOVED_KEYS`` that a raw config tree still uses, if any."""
    for old in MOVED_KEYS:
        section, _, key = old.partition(".")
        node = raw.get(section)
        if (isinstance(node, dict) and key in node) if key else node is not None:
            return old
    return None


def refuse_moved_keys(raw: dict) -> None:
    """A format-1 key is an error that says where it lives now (not silently translated:
    one way to write a config, and a format-1 run directory is not resumed as if it were new)."""
    old = moved_key(raw)
    if old is not None:
        new = MOVED_KEYS[old]
        example = (f"{new}.weight", f"{old}.weight") if "." not in old else (new, old)
        raise ConfigError(
            f"{old} is now {new} (config format 2 groups the objective's terms under loss:); "
            f"write {example[0]}=... instead of {example[1]}=..."
        )


def apply_override(raw: dict, override: str) -> None:
    """Set ``a.b.c=value`` in the raw tree (``cohort.config.tree.apply_override``), raising ConfigError."""
    apply_tree_override(raw, override, ConfigError)


RUN_NEUTRAL_KEYS = ("resume", "run_dir", "track")
"""Keys that do not change what a run computes: a run may be resumed, its folder moved, or a
tracker added or moved when it is resumed (the tracker catches up from ``metrics.jsonl``)."""


def same_run_config(a: dict, b: dict) -> bool:
    """Whether two dumped configs describe the same run (``RUN_NEUTRAL_KEYS`` aside)."""
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    for d in (a, b):
        for key in RUN_NEUTRAL_KEYS:
            d.pop(key, None)
    return a == b


def first_difference(a, b, path: str = "") -> str:
    """Where two dumped configs of different runs first differ (``RUN_NEUTRAL_KEYS`` aside), for errors."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in RUN_NEUTRAL_KEYS and a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{path}.{i}")
    return f"{path}: {a!r} there, {b!r} here"
