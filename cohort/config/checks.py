"""The config's error and the small checks every section uses.

``ConfigError`` is a ``CohortError`` (one line naming the key and the fix, met alike by every
rank) and a ``TreeError``, so that the typed-tree engine (``cohort.config.tree``) raises it
for a key that is unknown or of the wrong type.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from cohort.config.tree import TreeError
from cohort.errors import CohortError


class ConfigError(CohortError, TreeError):
    """A configuration problem; its message is one line naming the key and the fix (a ValueError,
    as every ``TreeError``)."""


def choose(key: str, value: str, valid: tuple[str, ...]) -> None:
    """Refuse ``value`` unless it is one of ``valid``, naming ``key`` and the choices."""
    if value not in valid:
        raise ConfigError(f"{key} {value!r} is not valid; choose one of: {', '.join(valid)}")


def refuse_nonfinite(tree: Any, where: str) -> None:
    """Raise ConfigError naming the first float of dataclass ``tree`` (its lists included) that is
    nan or infinite: YAML's ``.nan`` and ``.inf``, and the strings ``nan`` and ``inf``, which a
    float field accepts as it accepts ``5e-4``. No setting of the schema means anything infinite."""
    for f in dataclasses.fields(tree):
        key, value = f"{where}.{f.name}" if where else f.name, getattr(tree, f.name)
        if dataclasses.is_dataclass(value):
            refuse_nonfinite(value, key)
            continue
        for index, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            culprit = key if index is None else f"{key}.{index}"
            if dataclasses.is_dataclass(item):
                refuse_nonfinite(item, culprit)
            elif isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{culprit} must be a finite number, got {item}; set a finite value")
