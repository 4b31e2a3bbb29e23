"""The package's shape: no import cycles, the method (core/) depends on nothing above it (not even
the training machinery), one road through the code (one `load_run`, the training loop runs the
README's Algorithm 1), and no module over 400 lines, function over 60 or over 8 parameters
(ebm_vae/ and tools/)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ebm_vae"


def _imports() -> dict[str, set[str]]:
    """Module -> the ebm_vae modules it imports at module level."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ebm_vae"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("ebm_vae")}
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules, or []."""
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str]:
        if state.get(m) == 1:
            return path[path.index(m):] + [m]
        if state.get(m) == 2:
            return []
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            found = visit(d, path + [m])
            if found:
                return found
        state[m] = 2
        return []
    for m in sorted(graph):
        found = visit(m, [])
        if found:
            return found
    return []


def test_no_import_cycles():
    graph = _imports()
    assert "ebm_vae.core.teach" in graph and "ebm_vae.reproduce.pipeline" in graph
    assert _cycle(graph) == []
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check works


def test_core_depends_on_nothing_above_it():
    above = ("ebm_vae.training", "ebm_vae.eval", "ebm_vae.completion", "ebm_vae.reproduce",
             "ebm_vae.api")
    for module, deps in _imports().items():
        if module.startswith("ebm_vae.core"):
            assert not [d for d in deps if d.startswith(above)], module


def _names(path: Path) -> set[str]:
    """Every identifier a module's code uses (names, attributes, imported modules), no comments."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
        elif isinstance(node, (ast.FunctionDef, ast.arg)):
            names.add(node.name if isinstance(node, ast.FunctionDef) else node.arg)
    return names


def test_the_algorithm_holds_no_distribution_code():
    for name in ("teach.py", "langevin.py"):
        names = _names(PACKAGE / "core" / name)
        assert "ebm_vae.core.config" in names or "paddle" in names  # the walk sees the code
        found = {n for n in names if any(w in n.lower() for w in
                                         ("parallel", "rank", "world", "all_reduce", "part",
                                          "shard", "randn_fn", "distributed"))}
        assert not found, f"core/{name} uses {sorted(found)}"


LAYERS = ["errors", "utils", "data", "core", "training", "eval", "completion", "reproduce", "api"]


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else -1


def _from_imports(tree: ast.AST) -> list[ast.ImportFrom]:
    return [n for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("ebm_vae.")]


def test_no_module_imports_a_higher_layer():
    """errors < utils < data < core < training < eval < completion < reproduce < api."""
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        mine = _layer(module)
        if mine < 0:
            continue
        up = [n.module for n in _from_imports(ast.parse(path.read_text())) if _layer(n.module) > mine]
        assert up == [], f"{module} imports the higher layer(s) {up}"
    assert _layer("ebm_vae.utils.cli") < _layer("ebm_vae.core.config")  # the check works


def test_no_private_name_is_imported_across_packages():
    for path in list(PACKAGE.rglob("*.py")) + list((PACKAGE.parent / "tools").glob("*.py")):
        package = ".".join(path.relative_to(PACKAGE.parent).parts[:2])
        for node in _from_imports(ast.parse(path.read_text())):
            private = [a.name for a in node.names if a.name.startswith("_")]
            if not node.module.startswith(package):
                assert private == [], f"{path} imports {private} from {node.module}"


def test_in_function_imports_are_only_the_lazy_api_and_optional_packages():
    """Imports inside functions: the package's lazy attributes (no work on `import ebm_vae`) and
    optional or slow third-party packages (torch, Paddle's downloaders); never a cycle dodge."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for n in ast.walk(fn):
                    if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("ebm_vae"):
                        found.add((path.relative_to(PACKAGE).as_posix(), fn.name))
    assert found == {("__init__.py", "__getattr__")}


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Files exempt from the size limits while being split (the test fails on an entry within them).
PENDING_SPLIT: set[str] = set()


def _over_limits(name: str, text: str) -> list[str]:
    """What in a module's source is over the limits: the module, and every function (nested ones
    and methods included) over MAX_FUNCTION_LINES, its def line to its last line."""
    over = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        over.append(f"{name}: {lines} lines")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                over.append(f"{name}:{node.lineno} {node.name}() {length} lines")
    return over


def test_no_module_over_400_lines_and_no_function_over_60():
    repo = PACKAGE.parent
    over, pending = [], {}
    for path in sorted([*PACKAGE.rglob("*.py"), *(repo / "tools").glob("*.py")]):
        name = path.relative_to(repo).as_posix()
        found = _over_limits(name, path.read_text())
        if name in PENDING_SPLIT:
            pending[name] = found
        else:
            over += found
    assert over == [], (f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a "
                        f"function: {over}")
    done = sorted(name for name in PENDING_SPLIT if not pending.get(name))
    assert done == [], f"{done} within the limits now (or gone): remove from PENDING_SPLIT"
    nested = "class A:\n    def f(self):\n        def g():\n" + "            pass\n" * 60
    assert _over_limits("x.py", nested) == ["x.py:2 f() 62 lines", "x.py:3 g() 61 lines"]


def _sources() -> list[Path]:
    repo = PACKAGE.parent
    return sorted([*PACKAGE.rglob("*.py"), *(repo / "tools").glob("*.py")])


def _functions(tree: ast.AST) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


MAX_PARAMETERS = 8


def _parameters(fn: ast.FunctionDef) -> int:
    """A function's parameters, `self` / `cls` of a method not counted, *args and **kwargs are."""
    a = fn.args
    names = [p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
    own = names[1:] if names[:1] in (["self"], ["cls"]) else names
    return len(own) + (a.vararg is not None) + (a.kwarg is not None)


def test_no_function_takes_more_than_8_parameters():
    """Configs are passed whole (the section a function needs), not field by field."""
    over = [f"{path.relative_to(PACKAGE.parent).as_posix()}:{fn.lineno} {fn.name}() "
            f"{_parameters(fn)}" for path in _sources()
            for fn in _functions(ast.parse(path.read_text())) if _parameters(fn) > MAX_PARAMETERS]
    assert over == [], f"over {MAX_PARAMETERS} parameters: {over}"
    wide = ast.parse("class A:\n    def f(self, a, b, *c, d, **e): pass").body[0].body[0]
    assert _parameters(wide) == 5  # the check works


def test_one_load_run():
    """One way to load a run: one `def load_run` in ebm_vae/ (ebm_vae.load_run is that one)."""
    found = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
             for fn in _functions(ast.parse(path.read_text())) if fn.name == "load_run"]
    assert found == ["training/runs.py"], found
    import ebm_vae
    from ebm_vae.training import runs
    assert ebm_vae.load_run is runs.load_run


def test_training_runs_the_readmes_algorithm_1():
    """The README names `ebm_vae/core/teach.py` and docs/method.md its `teach_step` as Algorithm 1:
    every training task's step calls that function (generation and completion alike)."""
    readme = (PACKAGE.parent / "README.md").read_text()
    assert "Algorithm 1" in readme and "`ebm_vae/core/teach.py: teach_step`" in readme
    for name in ("training/generation.py", "completion/train.py"):
        steps = [fn for fn in _functions(ast.parse((PACKAGE / name).read_text()))
                 if fn.name == "step"]
        called = {n.func.id for fn in steps for n in ast.walk(fn)
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert len(steps) == 1 and "teach_step" in called, name
    loop = ast.parse((PACKAGE / "training" / "trainer.py").read_text())
    calls = {n.func.attr for n in ast.walk(loop) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute)}
    assert "step" in calls  # the trainer's iteration is the task's step


def test_the_sampling_defaults_are_resolved_in_one_place():
    """"Steps default to sample.steps" (and chains to train.num_chains) is written once."""
    found = [path.relative_to(PACKAGE.parent).as_posix() for path in _sources()
             if "sample.steps if" in path.read_text() or "num_chains if" in path.read_text()]
    assert found == ["ebm_vae/core/sampling.py"], found
