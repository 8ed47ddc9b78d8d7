"""The package's shape: no import cycle among its modules (imports inside functions count too)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:  # `from cohort import checkpoint` imports a module
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


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_projects_modules():
    modules = project_modules()
    assert {"cohort.train", "cohort.trainer", "cohort.worker", "cohort.launch.submit"} <= set(modules)
    assert find_cycle(import_graph(modules)) is None
