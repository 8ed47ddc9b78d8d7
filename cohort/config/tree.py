"""A typed tree: YAML read into a tree of dataclasses, checked against their type hints as it is built.

The generic engine under ``cohort.config`` (which holds the schema); it imports nothing from the project.

* ``read_yaml`` reads a file into a raw tree of mappings, lists and plain values (UTF-8, each
  key of a mapping once: PyYAML itself lets a repeated key's last value win silently);
* ``apply_override`` sets ``key=value`` in the raw tree: a dotted path (``optim.lr=0.05``) whose
  digit parts index lists (``members.1.arch=resnet56``), the value parsed as YAML;
* ``build`` constructs a dataclass from the raw tree, each field coerced to its type hint:
  dataclasses, ``list[X]``, ``dict[K, V]`` (a mapping; its entries are not checked), ``bool``,
  ``int``, ``float`` (an int, or a string such as ``5e-4``, is converted), ``str``, ``None`` and
  unions of these (``int | str``: the first member that accepts the value wins); other hints
  (``Any``) take any value;
* ``config_to_dict`` and ``dump_config`` write a built tree back out.

An unknown key or a value of the wrong type is an error whose one-line message names the key
(``members.1.optim.lr``). The functions that check raise ``error``, a subclass of ``TreeError``
that the caller passes (its own, such as ``cohort.config.ConfigError``), ``TreeError`` by default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class TreeError(ValueError):
    """A raw tree that does not fit its dataclasses; the message is one line naming the key."""


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, line: int):
        super().__init__(key, first, line)
        self.key, self.first, self.line = key, first, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a mapping may not name a key twice (PyYAML lets the
    last one win silently; a merge key ``<<`` may still be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:  # an unhashable key: PyYAML's own error names it
                break
        return super().construct_mapping(node, deep)


def read_yaml(path: Path, error: type[TreeError] = TreeError, empty: str | None = None, fix: str | None = None) -> dict:
    """The raw tree of YAML file ``path``, which must hold a mapping (each key once).

    A file with no YAML document (empty, or blanks and comments only) reads as ``{}``, or,
    given ``empty`` (the fix to name), is an error. ``fix``: the fix every error names instead
    of its own (for a file a program wrote, which a user does not edit)."""

    def fail(problem: str, own: str) -> TreeError:
        return error(f"{problem}; {fix or own}")

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as problem:
        line = problem.object[: problem.start].count(b"\n") + 1
        raise fail(
            f"{path} is not UTF-8 text (byte {problem.object[problem.start]:#04x} on line {line})", "save it as UTF-8"
        ) from None
    except IsADirectoryError:
        raise fail(f"{path} is a directory, not a YAML file", "pass the file itself") from None
    except OSError as problem:
        raise fail(f"cannot read {path} ({problem.strerror})", "pass a readable YAML file") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as twice:
        lines = f"on line {twice.line}" if twice.first == twice.line else f"on lines {twice.first} and {twice.line}"
        raise fail(f"{path} sets key {twice.key} twice ({lines})", "keep one of them") from None
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise fail(f"{path} is not valid YAML{where}", "fix the file's syntax") from None
    if raw is None:
        if empty is not None:
            raise error(f"{path} is empty; {empty}")
        raw = {}
    if not isinstance(raw, dict):
        problem = f"{path} must hold a YAML mapping of config keys, not {type(raw).__name__}"
        raise error(f"{problem}; {fix}" if fix else problem)
    return raw


def apply_override(raw: dict, override: str, error: type[TreeError] = TreeError) -> None:
    """Set ``a.b.c=value`` in the raw tree; the value is parsed as YAML (``1e-3``, ``[1, 2]``)."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise error(f"override {override!r} must look like key=value (e.g. optim.lr=0.05)")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: depth + 1]), error)
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key, error)] = value
    else:
        node[last] = value


def _child(node: Any, part: str, path: str, error: type[TreeError]) -> Any:
    """The entry ``part`` of ``node`` on the way to an override's key, created (empty) if missing."""
    if isinstance(node, list):
        return node[_list_index(node, part, path, error)]
    if not isinstance(node, dict):
        raise error(f"override path {path!r} descends into a plain value")
    if part not in node or node[part] is None:
        node[part] = {}
    return node[part]


def _list_index(node: list, part: str, path: str, error: type[TreeError]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise error(f"{path}: list index {part!r} is out of range (the list has {len(node)} entries)")
    return int(part)


def build(cls: type, raw: Any, where: str = "", error: type[TreeError] = TreeError) -> Any:
    """Construct dataclass ``cls`` from a raw mapping at key ``where`` ("": the root), checking keys and types.
    Missing keys take the fields' defaults."""
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise error(f"{where or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        prefix, of = (f"{where}.", f" of {where}") if where else ("", "")
        raise error(f"unknown key {prefix}{unknown[0]}; valid keys{of}: {', '.join(sorted(fields))}")
    values = {name: _coerce(hints[name], raw[name], f"{where}.{name}" if where else name, error) for name in raw}
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str, error: type[TreeError]) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key, error)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise error(f"{key} must be a list, got {value!r}")
        return [_coerce(item, v, f"{key}.{i}", error) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise error(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        for option in options:
            try:
                return _coerce(option, value, key, error)
            except error:
                pass  # the next member may accept it
        raise error(f"{key} must be {' or '.join(map(_describe, options))}, got {value!r}")
    if hint is types.NoneType and value is not None:
        raise error(f"{key} must be null, got {value!r}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # PyYAML (YAML 1.1) reads exponents without a dot, such as 5e-4, as strings.
        try:
            return float(value)
        except ValueError:
            raise error(f"{key} must be float, got {value!r}") from None
    if hint is bool and not isinstance(value, bool):
        raise error(f"{key} must be true or false, got {value!r}")
    if hint in (int, float) and (isinstance(value, bool) or not isinstance(value, hint)):
        raise error(f"{key} must be {hint.__name__}, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise error(f"{key} must be a string, got {value!r}")
    return value


def _describe(hint: Any) -> str:
    """A union member as an error message names it: ``int``, ``null``, ``list[int]``."""
    if hint is types.NoneType:
        return "null"
    return hint.__name__ if isinstance(hint, type) else str(hint)


def config_to_dict(config: Any) -> dict:
    """A built tree as plain mappings and lists, the dataclasses' fields in declaration order."""
    return dataclasses.asdict(config)


def dump_config(config: Any, path: Path) -> None:
    """Write a built tree to ``path`` as YAML (atomically: a temp file, synced, then a rename;
    a failure removes the temp file)."""
    tmp = path.with_suffix(".yaml.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(yaml.safe_dump(config_to_dict(config), sort_keys=False))
            f.flush()
            os.fsync(f.fileno())  # before the rename: a machine's crash cannot leave an empty file
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
