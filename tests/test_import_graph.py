"""The import graph of ``untapped``, read from the source with ``ast``: no circle, and no side door into the
speed layer.

Every ``import`` counts, at the top of a module or inside a function (a lazy
import closes a circle as surely as an eager one). ``from package import
name`` is an edge to the module ``package.name`` when there is one, else to
the package itself (its ``__init__``).
"""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "untapped"


def _module_names():
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = _module_names()


def imported(name, path=None):
    """The modules of ``untapped`` that module ``name`` imports anywhere in its source."""
    path = path or MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


def circles(graph):
    """The strongly connected components of more than one node (Tarjan), each sorted: the circles of ``graph``."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package(name):
    """``untapped.<subpackage>`` for a module of a subpackage; a top-level module is its own node."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else name


GRAPH = {name: imported(name) for name in MODULES}


def test_the_reader_sees_imports_everywhere(tmp_path):
    """The graph is read right: eager, lazy, relative and ``from package import module`` imports are edges."""
    source = tmp_path / "probe.py"
    source.write_text(
        "import untapped.files\n"
        "from untapped.experiment import spec\n"
        "from untapped.study.runs import groups\n"
        "from . import presets\n"
        "def later():\n"
        "    from untapped import evaluation\n"
    )
    assert imported("untapped.probe", source) == {
        "untapped.files", "untapped.experiment.spec", "untapped.study.runs", "untapped.presets", "untapped.evaluation",
    }
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set(), "c": {"a"}}) == []


def test_no_module_imports_itself_back():
    assert len(GRAPH) > 60 and "untapped.experiment.cluster" in GRAPH and "untapped.study.report" in GRAPH
    assert circles(GRAPH) == []


def test_no_package_imports_itself_back():
    """Nor do the subpackages (``untapped.experiment``, ``untapped.study``, ...) import each other in a circle."""
    packages = {}
    for name, targets in GRAPH.items():
        packages.setdefault(_package(name), set()).update(_package(t) for t in targets if _package(t) != _package(name))
    assert {"untapped.experiment", "untapped.study", "untapped.paper", "untapped.fast"} <= set(packages)
    assert circles(packages) == []
    # The study reads finished runs; it needs nothing of the experiment that makes them.
    assert "untapped.experiment" not in packages["untapped.study"]


#: The subpackages whose ``__init__`` gathers its modules' names.
FACES = {name for name, path in MODULES.items() if path.name == "__init__.py" and name != "untapped"}


def test_no_module_goes_through_the_experiment_or_the_study_face():
    """Inside ``untapped``, the experiment's and the study's modules are imported by their own names, not their
    ``__init__``."""
    for name, targets in GRAPH.items():
        assert not targets & {"untapped.experiment", "untapped.study"}, f"{name} imports a face"


def test_the_study_imports_modules_not_faces():
    assert {"untapped.evaluation", "untapped.data", "untapped.experiment"} <= FACES
    for name in (m for m in MODULES if m.startswith("untapped.study.")):
        assert not GRAPH[name] & FACES, f"{name} imports {sorted(GRAPH[name] & FACES)}"


def test_the_graph_builder_imports_nothing_of_the_speed_layer():
    """The speed layer enters a graph through the kernels and the compile mode only (docs/architecture.md)."""
    source = MODULES["untapped.graph"].read_text()
    assert not [m for m in GRAPH["untapped.graph"] if m == "untapped.fast" or m.startswith("untapped.fast.")]
    assert "untapped.fast" not in source and "from untapped import fast" not in source
    code = "import sys, untapped.graph; print(sorted(m for m in sys.modules if m.startswith('untapped.fast')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["[]"]
