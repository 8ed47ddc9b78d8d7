"""Every field of the config tree has a docstring (README promises it): the string right
under the field in its dataclass, which the source shows a reader and this test finds."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing

from cohort.config import CohortConfig


def sections(root: type) -> list[type]:
    """Every dataclass of the tree under ``root``, ``root`` first (lists of sections included, and
    optional sections that default to null, such as ``track.wandb``, through their type hints)."""
    found, todo = [], [root]
    while todo:
        cls = todo.pop(0)
        if cls in found:
            continue
        found.append(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            items = default if isinstance(default, list) else [default]
            todo += [type(item) for item in items if dataclasses.is_dataclass(item)]
            todo += [hint for hint in typing.get_args(hints[f.name]) if dataclasses.is_dataclass(hint)]
    return found


def undocumented(cls: type) -> list[str]:
    """The fields ``cls`` declares itself (not its bases') that no string follows."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    missing = []
    for statement, following in zip(body, [*body[1:], None]):
        if not isinstance(statement, ast.AnnAssign) or not isinstance(statement.target, ast.Name):
            continue
        if "ClassVar" in ast.unparse(statement.annotation):
            continue
        documented = (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        )
        if not documented:
            missing.append(f"{cls.__name__}.{statement.target.id}")
    return missing


def test_every_field_of_the_config_tree_has_a_docstring():
    classes = sections(CohortConfig)
    assert len(classes) >= 15  # the root, its sections, the loss terms, members
    assert {"WandbConfig", "MlflowConfig"} <= {cls.__name__ for cls in classes}
    missing = [
        name for cls in classes for base in cls.__mro__ if dataclasses.is_dataclass(base) for name in undocumented(base)
    ]
    assert not sorted(set(missing)), f"document these fields: {sorted(set(missing))}"


def test_the_check_finds_an_undocumented_field():
    @dataclasses.dataclass
    class Section:
        documented: int = 1
        """Said."""
        bare: int = 2

    assert undocumented(Section) == ["Section.bare"]
