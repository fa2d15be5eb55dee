"""The package's layout rules, checked on the source: no import cycles between modules
(lazy imports inside functions included), no module reaching into another subpackage's
private modules, and no module much over 500 lines."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "sparsecode"
#: The longest a module may grow before it should be split.
MAX_LINES = 520


def _module_name(path):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path):
    """Every ``sparsecode`` module ``path`` imports, at module level or in a function."""
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sparsecode")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if not base.startswith("sparsecode"):
                continue
            for a in node.names:  # "from pkg import mod" imports the module pkg.mod
                sub = f"{base}.{a.name}"
                found.add(sub if (ROOT.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                          or (ROOT.parent / sub.replace(".", "/")).is_dir() else base)
    return found


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}
GRAPH = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def _is_package_init(m):
    return MODULES[m].name == "__init__.py"


def test_no_import_cycles():
    # package __init__ modules only re-export: an import of a package is an import of the
    # modules it names, so cycles through an __init__ are not real
    graph = {m: {i for i in deps if not _is_package_init(i)} for m, deps in GRAPH.items()
             if not _is_package_init(m)}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def _subpackage(m):
    parts = m.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and _is_package_init(m)) else None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_modules_of_other_subpackages(module):
    own = _subpackage(module)
    bad = []
    for dep in GRAPH[module]:
        parts = dep.split(".")
        private = any(p.startswith("_") for p in parts[2:])
        if len(parts) > 2 and private and parts[1] != own:
            bad.append(dep)
    assert bad == [], f"{module} imports private modules of another subpackage"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{module} has {n} lines: split it"
