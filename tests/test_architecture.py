"""The import layers of the package, read from the source (every import, including the lazy ones
inside functions): no cycle between modules, and no module importing a layer above its own.

    cli -> pipeline -> stages -> (bench | tasks | train) -> (runtime | export) -> modeldir
        -> (quantization | head_kd) -> distill -> ... -> data -> sparsity -> (config | fileio) -> errors

The full list is LAYERS below; docs/architecture.md explains it. A module may import the layers
below its own; the packages that share a layer may not import each other (the runtime never
imports bench, which measures it).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pruneofa

SRC = Path(pruneofa.__file__).parent

# top -> bottom; the names of one row are independent of each other. "pruneofa" is the package's
# own __init__ (the public API) only; every other entry covers a module or package and what is under it.
LAYERS: list[list[str]] = [
    ["pruneofa", "pruneofa.__main__"],
    ["pruneofa.cli"],
    ["pruneofa.pipeline"],
    ["pruneofa.stages"],
    ["pruneofa.bench", "pruneofa.tasks", "pruneofa.train"],
    ["pruneofa.runtime", "pruneofa.export"],
    ["pruneofa.modeldir"],
    ["pruneofa.quantization", "pruneofa.head_kd", "pruneofa.trainer_kd"],
    ["pruneofa.distill"],
    ["pruneofa.representation_kd", "pruneofa.deferred_logits", "pruneofa.attention_probabilities"],
    ["pruneofa.models", "pruneofa.token_loss"],
    ["pruneofa.data"],
    ["pruneofa.sparsity"],
    ["pruneofa.config", "pruneofa.fileio", "pruneofa.version"],
    ["pruneofa.errors"],
]


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports() -> dict[str, set[str]]:
    """module -> the pruneofa modules it imports anywhere in its body."""
    mods = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets = submodules or [base]  # `from pkg import module` imports the module, not pkg's body
            for target in targets:
                while target not in mods and "." in target:
                    target = target.rpartition(".")[0]
                if target in mods and target != name and target.startswith("pruneofa"):
                    graph[name].add(target)
    return graph


def layer_of(module: str) -> tuple[int, str]:
    best = None
    for i, row in enumerate(LAYERS):
        for entry in row:
            covers = module == entry or (entry != "pruneofa" and module.startswith(entry + "."))
            if covers and (best is None or len(entry) > len(best[1])):
                best = (i, entry)
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and to docs/architecture.md)"
    return best


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)


def test_no_import_goes_up_or_sideways():
    bad = []
    for source, targets in imports().items():
        (i, own) = layer_of(source)
        for target in targets:
            (j, other) = layer_of(target)
            if j < i or (j == i and other != own):
                bad.append(f"{source} -> {target}")
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(modules()):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_is_named_like_the_standard_library():
    import sys

    clashes = [m for m in modules() if m.rpartition(".")[2] in sys.stdlib_module_names]
    assert not clashes, clashes
