"""The package's shape: imports run one way down the pipeline, with no cycles (function-level imports included)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pyclvp"

# Each module's layer (by its first name under pyclvp/); a module may import its own layer and those below.
LAYERS = {
    "checks": 0, "_core": 0,
    "io": 1, "config": 1,
    "text": 2, "audio": 2,
    "ops": 3, "decoding": 3,
    "model": 4,
    "rank": 5, "speech": 5, "convert": 5, "demo": 5,
    "cli": 6, "png": 6, "__main__": 7,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The pyclvp modules a file imports anywhere in it (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pyclvp")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("pyclvp"):
                # `from . import x` may name a submodule: count it as one when the file exists
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    as_path = PACKAGE.parent / sub.replace(".", "/")
                    found.add(sub if as_path.with_suffix(".py").is_file() or as_path.is_dir() else target)
    return found - {name}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else -1  # "pyclvp" itself: the lazy map, any layer


def test_every_module_has_a_layer():
    assert not [m for m in _graph() if m != "pyclvp" and m.split(".")[1] not in LAYERS]


def test_imports_run_down_the_pipeline():
    wrong = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
             for m, targets in _graph().items() for t in targets if m != "pyclvp" and _layer(t) > _layer(m)]
    assert not wrong, "\n".join(wrong)


def test_ops_never_import_model():
    assert not [(m, t) for m, ts in _graph().items() for t in ts if m.startswith("pyclvp.ops") and
                t.startswith("pyclvp.model")]


def test_no_import_cycles():
    graph = _graph()
    edges = {m: {t for t in ts if t in graph} for m, ts in graph.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
