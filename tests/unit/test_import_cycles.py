"""No import cycle inside ``monai_tumor``: every module can be read bottom-up.

The graph counts every import statement of a module, including the ones inside
functions and under ``if TYPE_CHECKING:``: an import moved into a function to dodge a
cycle at load time is still a cycle in the design, and this test is there to find it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "monai_tumor"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``monai_tumor`` modules that ``name`` (stored at ``path``) imports."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
            members: list[str] = []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            bases = [base]
            members = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for member in members:  # `from pkg import module` imports the submodule
            if member in known:
                targets.add(member)
        for base in bases:
            if base in known:
                targets.add(base)
    targets.discard(name)
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
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


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_no_import_cycle_in_the_package() -> None:
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles inside monai_tumor (break them): {cycles}"


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    graph = _graph()
    # module-level absolute import
    assert "monai_tumor.ingest.series" in graph["monai_tumor.ingest.index"]
    # the cycle finder itself finds a planted two-module cycle and a self-free chain
    planted = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(planted) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_imports_count(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "one.py").write_text("from . import two\n")
    (package / "two.py").write_text("def f():\n    from pkg.one import x\n    return x\n")
    known = {"pkg", "pkg.one", "pkg.two"}
    assert _imports("pkg.one", package / "one.py", known) == {"pkg", "pkg.two"}
    assert _imports("pkg.two", package / "two.py", known) == {"pkg.one"}
