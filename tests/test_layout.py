"""The layout is the architecture: stage packages, no import cycles, and the layering rules hold.

Imports are read from the source (every ``import`` and ``from ... import``, inside functions too:
a lazy import is still a dependency), so the check costs no import time and sees every module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pipelines", "models", "serving", "dags")
STAGES = (
    "ingest", "warehouse", "validation", "monitoring", "training", "publication", "experiments", "reports", "runtime"
)  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` imports, resolved to the longest known module name."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    graph = {name: imports_of(path, name, known) for name, path in modules.items()}
    # A package's __init__ is imported on the way to any of its modules, but importing a module
    # of a package from that package's __init__ is no cycle: drop those self-package edges.
    return {
        n: {t for t in targets if not n.startswith(t + ".") and not t.startswith(n + ".")}
        for n, targets in graph.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def external_imports(path: Path) -> set[str]:
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            tops |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            tops.add(node.module.split(".")[0])
    return tops


def test_no_module_imports_itself_back_through_others():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    """The check itself must be able to fail."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_is_one_package_of_pipelines(stage):
    assert (REPO / "pipelines" / stage / "__init__.py").exists(), f"pipelines/{stage}/ is not a package"


def test_pipelines_top_level_holds_only_the_entry_points():
    """Stage logic lives in the stage packages.

    The top level keeps the CLI, the settings, the cross-stage names (contract) and the simulator.
    """
    top = sorted(p.name for p in (REPO / "pipelines").glob("*.py"))
    assert top == ["__init__.py", "cli.py", "contract.py", "settings.py", "simulate.py"]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("models", {"pipelines", "serving", "dags", "airflow", "mlflow", "dbt", "great_expectations", "duckdb"}),
        ("serving", {"pipelines", "models", "dags", "airflow", "mlflow", "dbt", "great_expectations", "duckdb"}),
    ],
)
def test_layering(package, forbidden):
    offenders = {
        str(p.relative_to(REPO)): sorted(external_imports(p) & forbidden) for p in (REPO / package).rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_tests_mirror_the_packages():
    """Each stage package, the models and serving have their own folder of tests."""
    missing = [s for s in (*STAGES, "models", "serving", "dags", "e2e", "scaled") if not (REPO / "tests" / s).is_dir()]
    missing = [s for s in missing if s not in ("reports", "runtime")]  # covered through the stages and e2e
    assert missing == []
