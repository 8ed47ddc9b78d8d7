"""The package's shape: folders by role, layered; no import cycle (imports inside functions
count too; those only a type checker reads do not); small modules; tests that mirror it."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TOP_LEVEL = {"cohort", "cohort.cli", "cohort.preflight", "cohort.errors"}
"""The only modules at the top of the package: the command, the one plan, the error base."""

LAYERS = (
    ("cohort.errors",),
    ("cohort.config",),
    ("cohort.data", "cohort.models"),
    ("cohort.dist",),
    ("cohort.run",),
    ("cohort.preflight",),
    ("cohort.evaluate",),
    ("cohort.train",),
    ("cohort.launch", "cohort.cli"),
)
"""Lowest first: a module imports only from its own layer or the ones below it."""

MAX_LINES = 400


def project_modules() -> dict[str, Path]:
    """Every module of cohort by its import name (launch/ is installed as cohort.launch)."""
    modules = {}
    for path in [*(REPO / "cohort").rglob("*.py"), *(REPO / "launch").rglob("*.py")]:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[0] == "launch":
            parts = ["cohort", *parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` outside ``if TYPE_CHECKING:`` blocks (imports only a type checker reads)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            yield from (inner for child in node.orelse for inner in [child, *runtime_nodes(child)])
            continue
        yield node
        yield from runtime_nodes(node)


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:  # `from cohort.run import checkpoint_files` imports a module
                    candidate = f"{node.module}.{alias.name}"
                    imported.add(candidate if candidate in modules else node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, path = {}, []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                return [*path[path.index(other) :], other]
            if other not in state and (cycle := visit(other)):
                return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def layer(module: str) -> int | None:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(f"{p}.") for p in prefixes):
            return level
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_a_type_checker_alone_reads_are_not_edges():
    code = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import b\nelse:\n    import c\nimport d\n"
    names = {a.name for n in runtime_nodes(ast.parse(code)) if isinstance(n, ast.Import) for a in n.names}
    assert names == {"c", "d"}


def test_no_import_cycle_among_the_projects_modules():
    modules = project_modules()
    assert {"cohort.train", "cohort.train.trainer", "cohort.train.worker", "cohort.launch.submit"} <= set(modules)
    assert find_cycle(import_graph(modules)) is None


def test_top_level_holds_the_command_the_plan_and_the_errors_only():
    top = {name for name, path in project_modules().items() if path.parent == REPO / "cohort"}
    assert top == TOP_LEVEL


def test_every_module_has_a_layer_and_imports_nothing_above_it():
    graph = import_graph(project_modules())
    unplaced = sorted(m for m in graph if m != "cohort" and layer(m) is None)
    assert not unplaced, f"add these to LAYERS: {unplaced}"
    upward = [
        f"{m} (layer {layer(m)}) imports {other} (layer {layer(other)})"
        for m, others in sorted(graph.items())
        for other in sorted(others)
        if m != "cohort" and layer(other) is not None and layer(other) > layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_the_layer_check_catches_an_upward_import():
    assert layer("cohort.config.schema") < layer("cohort.run.directory") < layer("cohort.train.trainer")


def test_no_module_is_over_400_lines():
    long = {
        name: n for name, path in project_modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules: {long}"


def test_tests_mirror_the_package():
    """Each sub-package has a folder of tests, and the real-process suites have one of their own."""
    packages = sorted(p.name for p in (REPO / "cohort").iterdir() if (p / "__init__.py").is_file())
    missing = [name for name in [*packages, "launch", "scenarios"] if not (REPO / "tests" / name).is_dir()]
    assert not missing, f"tests/ lacks folders for {missing}"


def test_every_package_is_in_pyproject_so_a_regular_install_has_it():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(p.relative_to(REPO).parts[:-1]) for p in (REPO / "cohort").rglob("__init__.py")}
    assert listed == packages | {"cohort.launch"}
