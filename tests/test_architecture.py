"""The package's folders are its architecture (docs/architecture.md): imports only go down.

Every module under ``modules/soundcl`` is parsed (``ast``; imports inside functions
count too, and importing ``a.b.c`` also imports the packages ``a.b`` and ``a``). Each
module belongs to the first layer of :data:`LAYERS` whose package contains it; it may
import its own layer and the layers listed before it, never one after. The import
graph has no cycle, its deepest chain is shorter than before the folders (12 modules,
``cassle -> moco -> sup_term -> ssl -> strategies -> derpp -> er_ace -> brains ->
continual -> metrics -> curves -> atomic``), no module is much over 400 lines and every
folder says in its ``__init__`` docstring what lives there and what it may import.
The checks are functions of a package folder, so that they are also run on a
miniature package that breaks each rule (they must be able to fail).
"""
import ast
import os
from functools import lru_cache

import pytest

from conftest import REPO_ROOT

PACKAGE_ROOT = os.path.join(REPO_ROOT, "modules")

#: Lowest first; a module may import its own layer and the ones before it.
LAYERS = (
    "soundcl.base",  # atomic files, randomness, the HPARAMS contract, checkpoints
    "soundcl.models",  # encoders, heads, front ends
    "soundcl.data",  # data sets, audio loading, augmentation
    "soundcl.testing",  # miniature data sets (tests, benches)
    "soundcl.results",  # metrics, results files, report, plots, TensorBoard
    "soundcl.memory",  # memory policies and their scores
    "soundcl.core",  # the task loop and the machinery every method shares
    "soundcl.ondevice",  # complexity, quantization, export, distillation
    "soundcl.methods.supervised",  # sup_train strategies, replay
    "soundcl.methods.evaluation",  # linear / kNN evaluation, embedding maps
    "soundcl.methods.scene",  # scenes, on-device students, transfer
    "soundcl.methods.ssl",  # the continual-SSL family
    "soundcl.methods",
    "soundcl",  # the published command-line entry points (python -m soundcl.seeds / report / complexity)
)
#: The deepest import chain before the package had folders (modules in the chain).
DEPTH_BEFORE = 12
#: "No module over ~400 lines".
MAX_LINES = 420


def modules_of(root, package="soundcl"):
    """Dotted module name -> file, for every ``.py`` under ``root/package``."""
    found = {}
    for folder, _, files in os.walk(os.path.join(root, package)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, root)[: -len(".py")].replace(os.sep, ".")
                found[dotted[: -len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return found


def _imported_names(module, path, package):
    is_package = path.endswith("__init__.py")
    with open(path, encoding="utf-8") as fin:
        tree = ast.parse(fin.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the module's package
                base = module.split(".")[: len(module.split(".")) - (0 if is_package else 1)]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)  # "from pkg import module"


def import_graph(root, package="soundcl"):
    """Module -> set of the package's modules it imports (with the packages each import runs)."""
    modules = modules_of(root, package)
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in _imported_names(module, path, package):
            if name != package and not name.startswith(package + "."):
                continue
            while name not in modules and "." in name:  # from pkg.mod import function
                name = name.rsplit(".", 1)[0]
            parts = name.split(".")
            for i in range(2, len(parts) + 1):  # importing a.b.c runs a.b and a.b.c (not the root a)
                target = ".".join(parts[:i])
                if target in modules and target != module and not module.startswith(target + "."):
                    targets.add(target)
        graph[module] = targets
    return graph


def layer_of(module, layers=LAYERS):
    """Index in ``layers`` of the most specific layer containing ``module``."""
    best = None
    for i, layer in enumerate(layers):
        if module == layer or module.startswith(layer + "."):
            if best is None or len(layer) > len(layers[best]):
                best = i
    assert best is not None, f"{module} is in no layer of {layers}: add its folder to LAYERS"
    return best


def upward_imports(graph, layers=LAYERS):
    """[(module, imported module)] where a module imports a layer above its own."""
    return sorted((m, t) for m, targets in graph.items() for t in targets if layer_of(t, layers) > layer_of(m, layers))


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def deepest_chain(graph):
    """The longest import chain (a list of modules; the graph must be acyclic)."""

    @lru_cache(maxsize=None)
    def longest(m):
        below = [longest(t) for t in graph[m]]
        return (m,) + max(below, key=len, default=())

    return list(max((longest(m) for m in sorted(graph)), key=len, default=()))


def long_modules(root, package="soundcl", limit=MAX_LINES):
    """[(module, lines)] over ``limit`` lines."""
    out = []
    for module, path in modules_of(root, package).items():
        with open(path, encoding="utf-8") as fin:
            n = sum(1 for _ in fin)
        if n > limit:
            out.append((module, n))
    return sorted(out)


def undocumented_folders(root, package="soundcl"):
    """Packages whose ``__init__`` has no docstring saying what lives there and what it may import."""
    out = []
    for module, path in modules_of(root, package).items():
        if path.endswith("__init__.py"):
            with open(path, encoding="utf-8") as fin:
                doc = ast.get_docstring(ast.parse(fin.read())) or ""
            if len(doc.split()) < 25 or "import" not in doc.lower():
                out.append(module)
    return sorted(out)


GRAPH = import_graph(PACKAGE_ROOT)


def test_every_module_is_in_a_layer_and_imports_only_downwards():
    for module in GRAPH:
        layer_of(module)
    assert upward_imports(GRAPH) == []


def test_no_import_cycle():
    assert find_cycle(GRAPH) is None


def test_the_deepest_import_chain_is_shorter_than_before(capsys):
    chain = deepest_chain(GRAPH)
    with capsys.disabled():
        print(f"\ndeepest import chain: {len(chain)} modules (before the folders: {DEPTH_BEFORE}): "
              + " -> ".join(chain))
    assert len(chain) < DEPTH_BEFORE, chain


def test_no_module_is_over_about_400_lines():
    assert long_modules(PACKAGE_ROOT) == []


def test_every_folder_says_what_lives_there_and_what_it_may_import():
    assert undocumented_folders(PACKAGE_ROOT) == []
    folders = {m for m, p in modules_of(PACKAGE_ROOT).items() if p.endswith("__init__.py")}
    assert set(LAYERS) <= folders, set(LAYERS) - folders


# ---------------------------------------------------------------- the checks can fail


def _package(tmp_path, files):
    for rel, text in files.items():
        path = tmp_path / "soundcl" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


DOC = '"""' + "A folder docstring that says what lives here and what it may import: " * 3 + '"""\n'


def test_the_checks_find_an_upward_import_a_cycle_a_deep_chain_and_a_long_module(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": DOC,
        "base/__init__.py": DOC,
        "base/atomic.py": "from soundcl.core.task_loop import TaskLoop\n",  # upward
        "core/__init__.py": '"""Short."""\n',  # undocumented
        "core/task_loop.py": "def f():\n    from soundcl.core import b\n" + "x = 1\n" * MAX_LINES,  # in a function
        "core/a.py": "from . import b\n",  # a -> b -> a
        "core/b.py": "from soundcl.core.a import f\n",
    })
    layers = ("soundcl.base", "soundcl.core", "soundcl")
    graph = import_graph(root)
    assert graph["soundcl.base.atomic"] == {"soundcl.core", "soundcl.core.task_loop"}
    assert graph["soundcl.core.task_loop"] == {"soundcl.core.b"}
    assert upward_imports(graph, layers) == [("soundcl.base.atomic", "soundcl.core"),
                                             ("soundcl.base.atomic", "soundcl.core.task_loop")]
    assert find_cycle(graph) in (["soundcl.core.a", "soundcl.core.b", "soundcl.core.a"],
                                 ["soundcl.core.b", "soundcl.core.a", "soundcl.core.b"])
    assert long_modules(root) == [("soundcl.core.task_loop", MAX_LINES + 2)]
    assert undocumented_folders(root) == ["soundcl.core"]
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("other.module", layers)
    chain = deepest_chain({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"c"}})
    assert chain == ["a", "b", "c"]
