"""mlcore's modules import each other without cycles, and none imports the web app.

Every import counts, at the top of a module or inside a function: a lazy import only hides
a cycle from Python's import machinery, not from a reader.
"""
import ast
from pathlib import Path

import mlcore

PACKAGE = Path(mlcore.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    """The mlcore modules ``path`` imports (``from . import storage`` names the module storage)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:
                out.update(a.name for a in node.names if a.name in modules)
            elif node.module and node.module.split(".")[0] == "mlcore":
                parts = node.module.split(".")
                out.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names if a.name in modules])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mlcore."))
    return out - {path.stem}


def graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in sorted(PACKAGE.glob("*.py"))}


def _cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``g`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n):
        state[n] = 1
        path.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        state[n] = 2
        path.pop()
        return None

    for n in sorted(g):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_finder_sees_lazy_imports_and_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    g = graph()
    assert "storage" in g["models"] and "train" in g["distributed"]  # a top-level and a lazy import


def test_mlcore_modules_form_no_import_cycle():
    assert _cycle(graph()) is None, " -> ".join(_cycle(graph()))


def test_mlcore_imports_nothing_of_the_web_app():
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            assert not [n for n in names if n.split(".")[0] in ("labeling", "django", "rest_framework", "celery")], \
                (path.name, names)
