"""The package's layout: no import cycle between its modules, the leaf modules import nothing of the package, and no
module grows past the size a single concern needs."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aisp_trl"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every aisp_trl module ``path`` imports, at any depth (function-level imports count too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("aisp_trl")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("aisp_trl"):
                continue
            found.add(target)
            for alias in node.names:  # `from . import x` / `from .pkg import module`
                if (PACKAGE.parent / Path(*f"{target}.{alias.name}".split("."))).with_suffix(".py").is_file():
                    found.add(f"{target}.{alias.name}")
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # importing a.b.c runs a/__init__ and a/b/__init__ too: count the packages on the way as edges
        targets = set()
        for target in _imports(path):
            parts = target.split(".")
            targets |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_the_package_modules():
    graph = _graph()
    assert "aisp_trl.samplers.aisp" in graph and "aisp_trl.types" in graph["aisp_trl.samplers.aisp"]
    cycle = _cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_leaf_modules_import_nothing_of_the_package():
    graph = _graph()
    for leaf in ("aisp_trl.types", "aisp_trl._validation", "aisp_trl.proposals", "aisp_trl.prompts"):
        assert graph[leaf] == set(), f"{leaf} imports {sorted(graph[leaf])}"


def test_layers_point_one_way():
    # lower layers never import higher ones: types/config -> ops/proposals -> decoding -> rewards -> samplers ->
    # evaluation -> pipeline -> cli
    layers = ["decoding", "rewards", "samplers", "evaluation", "pipeline", "cli"]
    graph = _graph()
    for module, targets in graph.items():
        parts = module.split(".")
        own = parts[1] if len(parts) > 1 else ""
        if own not in layers:
            continue
        higher = layers[layers.index(own) + 1 :]
        bad = sorted(t for t in targets if t.split(".")[1] in higher)
        assert not bad, f"{module} imports the higher layer(s) {bad}"


def test_no_module_over_the_size_of_one_concern():
    sizes = {_module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    # over 500 lines but one concern each: the built-in prompt texts, the prompt / dataset I/O of the recipes, the
    # trained pre-logit modules and their fitting
    one_concern = {"aisp_trl.prompts", "aisp_trl.data", "aisp_trl.controllers"}
    too_big = {name: n for name, n in sizes.items() if n > 500 and name not in one_concern}
    assert not too_big, f"modules over 500 lines: {too_big}"
    assert all(sizes[name] < 700 for name in one_concern), {name: sizes[name] for name in one_concern}
