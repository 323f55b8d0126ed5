"""The package's import graph: no circles, and every import points down the layers

    runtime  <-  fl  <-  library (models, data, metrics, privacy, style)  <-  runs  <-  analysis  <-  command-line tools

and inside `runs` down the chain engine -> federation -> federated_training -> style_protocol -> runners ->
train -> sweep (RUNS_CHAIN). Imports inside functions count too: a lazy import hides a circle, it does not remove it."""

from __future__ import annotations

import ast
import os
import pkgutil

import pytest

import fedtransfer_jax

PKG_DIR = os.path.dirname(fedtransfer_jax.__file__)
REPO = os.path.dirname(PKG_DIR)

# Lower rank = lower layer; an import may only point to a rank <= its own (equal: inside one layer).
LIBRARY = ("models", "data", "metrics", "privacy", "style")
RUNS_CHAIN = (
    "figures",  # leaves: matplotlib figures and the summary's markdown
    "report",
    "postprocess_choice",  # the stored post-processing choice of a method
    "grain_size",  # the grain size a workdir's models were trained on (predict --scale auto)
    "engine",  # assembly from the config
    "inference",  # a trained model and its probabilities
    "federation",  # the round loop with checkpoints
    "run_context",
    "evaluation",
    "federated_training",
    "style_protocol",
    "runners",
    "population_training",  # federations of thousands: host-sampled K-client rounds (launch.py runner)
    "train",
    "sweep",
)
CLI = ("predict", "evaluate", "audit", "export_model", "calibrate")


def rank(module: str) -> float:
    parts = module.split(".")[1:]  # drop 'fedtransfer_jax'
    if not parts:
        return 0
    top = parts[0]
    if top == "runtime":
        return 1
    if top == "fl":
        return 2
    if top in LIBRARY:
        return 3
    if top == "runs":
        if len(parts) == 1:
            return 4
        return 4 + (RUNS_CHAIN.index(parts[1]) + 1) / 100
    if top == "analysis":  # predict's library: measuring a folder of micrographs, its outputs and report
        return 5
    if top in CLI:
        return 6
    raise AssertionError(f"{module}: not placed in a layer; add it to tests/test_layering.py")


def modules() -> dict[str, str]:
    out = {"fedtransfer_jax": os.path.join(PKG_DIR, "__init__.py")}
    for info in pkgutil.walk_packages([PKG_DIR], "fedtransfer_jax."):
        spec = info.module_finder.find_spec(info.name.rsplit(".", 1)[-1])
        out[info.name] = spec.origin
    return out


def imports_of(name: str, path: str, known: set[str]) -> set[str]:
    """The package modules `name` imports anywhere in its file (module level or inside functions)."""
    tree = ast.parse(open(path).read(), path)
    is_pkg = path.endswith("__init__.py")
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the module pkg.sub when there is one, else a name from pkg.
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import fedtransfer_jax.fl.round_x.y` -> the deepest known module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def test_every_import_points_down_the_layers():
    graph = import_graph()
    wrong = []
    for a, targets in graph.items():
        for b in targets:
            # A package's __init__ re-exports its own modules: that edge points into the package, not up.
            if b.startswith(a + "."):
                continue
            if rank(b) > rank(a):
                wrong.append(f"{a} imports {b}")
    assert not wrong, "imports against the layering:\n  " + "\n  ".join(sorted(wrong))


def test_no_import_circles():
    graph = import_graph()
    # Edges from a package __init__ to its own modules are re-exports; a module importing its own package's
    # __init__ for a sibling is then a loop through the __init__ only, which Python resolves. Drop those.
    edges = {a: {b for b in bs if not b.startswith(a + ".") and not a.startswith(b + ".")} for a, bs in graph.items()}
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def strongconnect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import circles: {cycles}"


def test_the_layering_test_sees_lazy_imports_and_circles(tmp_path):
    """The checker itself: a lazy import inside a function is an edge, and a two-module circle is found."""
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from fedtransfer_jax.runs import train\n")
    got = imports_of("fedtransfer_jax.fl.fake", str(a), {"fedtransfer_jax.runs.train", "fedtransfer_jax.runs"})
    assert got == {"fedtransfer_jax.runs.train"}
    with pytest.raises(AssertionError, match="not placed"):
        rank("fedtransfer_jax.somewhere_new")
