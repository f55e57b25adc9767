"""The import layers of docs/architecture.md, and no import cycles (module-level and function-level imports
alike), checked on the source with the ast module."""

import ast
from pathlib import Path

from support import ROOT

#: the command-line modules (python -m dps_map.NAME); nothing in dps_map imports them
CLI = {"run", "evaluate", "preflight", "bench", "demo", "migrate", "weights", "train_prior", "train_adapter",
       "train_reference", "fid_stats", "aggregate", "gpu_check"}
CORE = {"errors", "signals", "io", "diffusion", "data"}
LIBRARY = {"operators", "priors", "samplers", "adapters", "metrics"}
#: what the package offers a program outside it: everything but its command-line modules
PACKAGE = {"core", "library", "config", "runner", "training", "api"}
#: layer -> the layers it may import (besides itself). Outside the package, the studies (experiments/) build on
#: the package, and the repository's tools (tools/) on both; nothing in dps_map imports either.
ALLOWED = {"core": {"core"}, "library": {"core", "library"}, "config": {"core", "library", "config"},
           "runner": {"core", "library", "config", "runner"}, "training": {"core", "library", "config", "training"},
           "api": {"core", "library", "config"}, "cli": {"core", "library", "config", "runner", "training", "cli"},
           "experiments": PACKAGE | {"experiments"}, "tools": PACKAGE | {"experiments", "tools"}}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every dps_map / experiments / tools module this file imports, at any depth of its code."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in out if m.split(".")[0] in ("dps_map", "experiments", "tools")}


def modules() -> dict[str, Path]:
    files = [*(ROOT / "dps_map").rglob("*.py"), *(ROOT / "experiments").glob("*.py"), *(ROOT / "tools").glob("*.py")]
    return {module_name(p): p for p in files}


def layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] in ("experiments", "tools"):
        return parts[0]
    if parts[0] != "dps_map" or len(parts) == 1:
        return None
    top = parts[1]
    if top in CLI or parts[-1] == "fid_stats":
        return "cli"
    if top in CORE:
        return "core"
    if top in LIBRARY:
        return "library"
    return {"config": "config", "runner": "runner", "training": "training", "api": "api", "conf": None}.get(top)


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges = {}
    for name, path in mods.items():
        targets = set()
        for m in imports(path):
            while m and m not in mods:  # `from pkg import name`: a name, not a module
                m = m.rsplit(".", 1)[0] if "." in m else ""
            if m and m != name and not name.startswith(m + "."):  # a package's own __init__ is not an edge
                targets.add(m)
        edges[name] = targets
    return edges


def violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in edges.items():
        for dst in targets:
            a, b = layer(src), layer(dst)
            if a and b and b not in ALLOWED[a]:
                bad.append(f"{src} ({a}) imports {dst} ({b})")
    return sorted(bad)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            strong(v)
    return found


def test_layers_import_downwards_only():
    bad = violations(graph())
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    assert not cycles(graph())


def test_the_checks_see_an_import_inside_a_function_and_a_cycle(tmp_path):
    fake = tmp_path / "dps_map" / "samplers" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from ..config.targets import build\n")
    found = imports(fake, root=tmp_path)
    assert "dps_map.config.targets" in found
    assert violations({"dps_map.samplers.x": {"dps_map.config.targets"}}) == \
        ["dps_map.samplers.x (library) imports dps_map.config.targets (config)"]
    assert violations({"dps_map.run": {"dps_map.config.targets"}}) == []  # the command line may
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_studies_and_tools_sit_above_the_package():
    assert violations({"experiments.x": {"dps_map.demo"}}) == ["experiments.x (experiments) imports dps_map.demo (cli)"]
    assert violations({"experiments.x": {"tools.provenance"}}) == \
        ["experiments.x (experiments) imports tools.provenance (tools)"]
    assert violations({"dps_map.runner.x": {"experiments.common"}}) == \
        ["dps_map.runner.x (runner) imports experiments.common (experiments)"]
    assert violations({"tools.x": {"experiments.common", "dps_map.runner", "dps_map.api"}}) == []
