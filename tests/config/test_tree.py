"""The typed-tree engine on a schema of its own: building, coercing, overrides, dumping; in process."""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from cohort.config import tree as typed_tree
from cohort.config.tree import TreeError, apply_override, build, config_to_dict, dump_config, read_yaml


@dataclass
class Leaf:
    size: int = 1
    rate: float = 0.5
    on: bool = False
    label: str = "a"


@dataclass
class Root:
    leaf: Leaf = field(default_factory=Leaf)
    leaves: list[Leaf] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class MyError(TreeError):
    pass


def test_missing_keys_take_their_defaults_and_values_are_coerced():
    tree = build(
        Root, {"leaf": {"rate": 2, "label": "b"}, "leaves": [{}, {"size": 3}], "steps": [1, 2], "extra": {"x": [1]}}
    )
    assert tree == Root(Leaf(rate=2.0, label="b"), [Leaf(), Leaf(size=3)], [1, 2], {"x": [1]})
    assert isinstance(tree.leaf.rate, float)
    assert build(Leaf, {"rate": "5e-4"}).rate == 5e-4  # PyYAML reads 5e-4 as a string
    assert build(Root, {}) == Root()


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"lef": {}}, r"^unknown key lef; valid keys: extra, leaf, leaves, steps$"),
        ({"leaf": {"sise": 1}}, r"^unknown key leaf\.sise; valid keys of leaf: label, on, rate, size$"),
        ({"leaves": [{}, {"big": 1}]}, r"^unknown key leaves\.1\.big; valid keys of leaves\.1: "),
    ],
)
def test_unknown_keys_name_the_key_and_the_valid_ones(raw, message):
    with pytest.raises(TreeError, match=message):
        build(Root, raw)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"leaf": {"size": "ten"}}, r"^leaf\.size must be int, got 'ten'$"),
        ({"leaf": {"size": True}}, r"^leaf\.size must be int, got True$"),
        ({"leaf": {"size": 1.5}}, r"^leaf\.size must be int, got 1\.5$"),
        ({"leaf": {"rate": "fast"}}, r"^leaf\.rate must be float, got 'fast'$"),
        ({"leaf": {"rate": False}}, r"^leaf\.rate must be float, got False$"),
        ({"leaf": {"on": 1}}, r"^leaf\.on must be true or false, got 1$"),
        ({"leaf": {"label": 3}}, r"^leaf\.label must be a string, got 3$"),
        ({"leaf": 3}, r"^leaf must be a mapping, got 3$"),
        ({"leaves": {}}, r"^leaves must be a list, got \{\}$"),
        ({"leaves": [{}, {"size": "x"}]}, r"^leaves\.1\.size must be int, got 'x'$"),
        ({"steps": [1, "two"]}, r"^steps\.1 must be int, got 'two'$"),
        ({"extra": [1]}, r"^extra must be a mapping, got \[1\]$"),
    ],
)
def test_wrong_types_name_the_key(raw, message):
    with pytest.raises(TreeError, match=message):
        build(Root, raw)


def test_the_root_must_be_a_mapping():
    with pytest.raises(TreeError, match=r"^config must be a mapping, got \[1\]$"):
        build(Root, [1])


def test_errors_are_of_the_class_the_caller_passes():
    with pytest.raises(MyError, match=r"leaf\.size must be int"):
        build(Root, {"leaf": {"size": "x"}}, error=MyError)
    with pytest.raises(MyError, match=r"must look like key=value"):
        apply_override({}, "leaf", error=MyError)


def test_overrides_set_nested_keys_and_list_entries():
    raw = {"leaves": [{}, {"size": 2}]}
    for override in ("leaf.rate=1e-3", "leaves.1.size=5", "steps=[3, 4]", "leaf.label=", "new.deep.key=yes"):
        apply_override(raw, override)
    assert raw == {
        "leaves": [{}, {"size": 5}],
        "leaf": {"rate": "1e-3", "label": ""},
        "steps": [3, 4],
        "new": {"deep": {"key": True}},
    }
    raw = {"steps": [1, 2]}
    apply_override(raw, "steps.0=7")
    assert raw == {"steps": [7, 2]}


def test_an_override_fills_a_null_section():
    raw = {"leaf": None}
    apply_override(raw, "leaf.size=2")
    assert build(Root, raw).leaf == Leaf(size=2)


@pytest.mark.parametrize(
    "override, message",
    [
        ("leaf", r"^override 'leaf' must look like key=value \(e\.g\. optim\.lr=0\.05\)$"),
        ("=1", r"^override '=1' must look like key=value"),
        ("leaves.2.size=1", r"^leaves\.2: list index '2' is out of range \(the list has 1 entries\)$"),
        ("leaves.x.size=1", r"^leaves\.x: list index 'x' is out of range"),
        ("steps.5=1", r"^steps\.5: list index '5' is out of range \(the list has 2 entries\)$"),
        ("leaf.size.bits.more=1", r"^override path 'leaf\.size\.bits' descends into a plain value$"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(TreeError, match=message):
        apply_override({"leaves": [{}], "steps": [1, 2], "leaf": {"size": 1}}, override)


def test_read_yaml_needs_a_mapping_of_valid_yaml(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("leaf:\n  size: 1: 2\n")
    with pytest.raises(TreeError, match=r"t\.yaml is not valid YAML at line 2; fix the file's syntax$"):
        read_yaml(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(MyError, match=r"t\.yaml must hold a YAML mapping of config keys, not list$"):
        read_yaml(path, MyError)
    path.write_text("")
    assert read_yaml(path) == {}


def test_a_dumped_tree_reads_back_identically(tmp_path):
    tree = build(Root, {"leaf": {"rate": 0.25, "on": True}, "leaves": [{"label": "z"}], "steps": [2]})
    dump_config(tree, tmp_path / "t.yaml")
    assert build(Root, read_yaml(tmp_path / "t.yaml")) == tree
    assert list(config_to_dict(tree)) == [f.name for f in dataclasses.fields(Root)]
    assert not (tmp_path / "t.yaml.tmp").exists()


def test_the_engine_imports_nothing_from_the_project():
    tree = ast.parse(open(typed_tree.__file__).read())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported and not [name for name in imported if name.split(".")[0] == "cohort"]


@dataclass
class Unions:
    count: int | str = "auto"
    scale: float | None = None
    sizes: list[int] | str = "all"
    leaf: Leaf | None = None


def test_a_union_takes_the_first_member_that_accepts_the_value():
    tree = build(Unions, {"count": 3, "scale": 2, "sizes": [1, 2], "leaf": {"size": 4}})
    assert tree == Unions(3, 2.0, [1, 2], Leaf(size=4)) and isinstance(tree.scale, float)
    tree = build(Unions, {"count": "many", "scale": None, "sizes": "none", "leaf": None})
    assert tree == Unions("many", None, "none")


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"count": 2.0}, r"^count must be int or str, got 2\.0$"),
        ({"count": True}, r"^count must be int or str, got True$"),
        ({"count": None}, r"^count must be int or str, got None$"),
        ({"scale": "fast"}, r"^scale must be float or null, got 'fast'$"),
        ({"sizes": [1, "x"]}, r"^sizes must be list\[int\] or str, got \[1, 'x'\]$"),
        ({"leaf": 3}, r"^leaf must be Leaf or null, got 3$"),
    ],
)
def test_a_value_that_no_union_member_accepts_names_the_key_and_the_allowed_types(raw, message):
    with pytest.raises(TreeError, match=message):
        build(Unions, raw)


@pytest.mark.parametrize(
    "text, message",
    [
        ("leaf:\n  size: 1\n  size: 2\n", r"t\.yaml sets key size twice \(on lines 2 and 3\); keep one of them$"),
        ("steps: [1]\nleaf: {}\nsteps: [2]\n", r"sets key steps twice \(on lines 1 and 3\)"),
        ("leaf: {rate: 0.1, rate: 0.2}\n", r"sets key rate twice \(on line 1\)"),
        ("leaves:\n  - {label: a}\n  - label: b\n    label: c\n", r"sets key label twice \(on lines 3 and 4\)"),
    ],
)
def test_a_key_set_twice_is_an_error_naming_the_key_and_its_lines(tmp_path, text, message):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(MyError, match=message):
        read_yaml(path, MyError)


def test_a_merge_key_may_still_be_overridden(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("extra: {base: &b {size: 1, rate: 0.1}}\nleaf:\n  <<: *b\n  size: 2\n")
    assert read_yaml(path)["leaf"] == {"size": 2, "rate": 0.1}


def test_a_file_that_is_no_utf8_text_or_no_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_bytes(b"leaf:\n  label: caf\xe9\n")  # Latin-1
    with pytest.raises(MyError, match=r"t\.yaml is not UTF-8 text \(byte 0xe9 on line 2\); save it as UTF-8$"):
        read_yaml(path, MyError)
    with pytest.raises(MyError, match=r" is a directory, not a YAML file; pass the file itself$"):
        read_yaml(tmp_path, MyError)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_a_file_without_a_document_is_an_error_when_the_caller_names_the_fix(tmp_path, text):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    assert read_yaml(path) == {}
    with pytest.raises(MyError, match=r"t\.yaml is empty; write some keys$"):
        read_yaml(path, MyError, empty="write some keys")
    path.write_text("{}\n")  # an explicit empty mapping is a choice, not an accident
    assert read_yaml(path, MyError, empty="write some keys") == {}
