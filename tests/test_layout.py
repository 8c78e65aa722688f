"""The package's folders are its architecture, and these rules hold it (issue 26; ``docs/layout.md``):

1. no import cycle, counting imports made inside functions (a lazy import hides a cycle from Python, not
   from the design);
2. the science and the records import no TensorFlow and no Keras: importing anything in ``pruning/``,
   ``config/``, ``ticket/``, ``training/`` (but none of its TensorFlow uses), ``runner/`` results, replicates
   and plots, ``data/`` specs, ``models/specs`` or ``util/io`` loads none (their import-time closure), and the
   sources of ``pruning/``, ``config/``, ``ticket/``, results and plots import none even lazily;
3. each Keras flavour is its own package: ``keras3/`` never imports ``keras2/`` (nor the other way round),
   and a Keras is imported in one place per flavour: ``tf_keras`` and TF-MOT only in ``keras2/``, ``keras``
   only in ``keras3/``, TensorFlow itself only through ``util/tensorflow.py`` (and the flavour packages);
4. no module is a monster (size is a guide, not a reason to put code in the wrong place).
A fresh process checks what a ``--keras 3`` run really loads (tests/runner/test_keras3_runner.py)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tf_lth"
TENSORFLOW = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "keras", "jax", "ai_edge_litert")
NO_TENSORFLOW_AT_IMPORT = ("pruning", "config", "ticket", "training.recipe", "training.round_logic",
                           "training.evaluation", "training.fit_round", "training.cluster", "runner.results",
                           "runner.replicates", "runner.plots", "data.specs", "data.user", "data.image_folders",
                           "data.input_scale", "models", "models.specs", "util.io", "util.native_log", "errors",
                           "registry", "cli", "export.formats", "export.checks", "export.sparse_storage", "")
NO_TENSORFLOW_EVER = ("pruning", "config", "ticket", "runner.results", "runner.plots")


def modules() -> dict[str, Path]:
    """Dotted name below tf_lth (``""`` for the facade, ``"keras2"`` for keras2/__init__.py) -> its file."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, names: set[str], top_level_only: bool = False) -> tuple[set[str], set[str]]:
    """``(tf_lth modules, external top-level packages)`` that ``path`` imports (inside functions too, unless
    ``top_level_only``); ``from tf_lth.x import y`` names module ``x.y`` where that is one."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found, external = set(), set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [(node.module, a.name) for a in node.names]
        else:
            continue
        for module, name in targets:
            parts = module.split(".")
            if parts[0] != "tf_lth":
                external.add(parts[0])
                continue
            base = ".".join(parts[1:])
            sub = f"{base}.{name}" if base and name else (name or "")
            found.add(sub if sub in names else base)
    return found, external


def graph(top_level_only: bool = False) -> tuple[dict, dict]:
    names = modules()
    edges, external = {}, {}
    for name, path in names.items():
        edges[name], external[name] = imports(path, set(names), top_level_only)
        edges[name].discard(name)
    return edges, external


def closure(name: str, edges: dict) -> set[str]:
    """``name`` and every module importing it loads, its parent packages included."""
    seen, todo = set(), [name]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(len(parts))]  # importing a.b runs a/__init__ first
        todo += [m for m in edges.get(module, ()) if m in edges]
    return seen


def find_cycle(edges: dict) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges[m]):
            if n not in edges:
                continue
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") or (p == "" and name == "") for p in prefixes)


def test_the_checks_see_a_violation():
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    edges = {"": set(), "pruning": set(), "pruning.x": {"keras2"}, "keras2": set()}
    assert "keras2" in closure("pruning.x", edges)


def test_no_import_cycle_in_the_package():
    edges, _ = graph()
    assert "ticket.ticket" in edges["runner.experiment"]  # the scan sees the package's imports
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle)


def test_the_science_and_the_records_load_no_tensorflow_or_keras():
    edges, external = graph(top_level_only=True)
    heavy = [name for name in edges if under(name, ("keras2", "keras3", "util.tensorflow", "data.pipeline",
                                                     "data.augment", "export.tflite", "export.quantize"))]
    checked = [name for name in edges if under(name, NO_TENSORFLOW_AT_IMPORT)]
    assert len(checked) >= 30
    for name in checked:
        loaded = closure(name, edges)
        assert not loaded & set(heavy), f"importing tf_lth.{name} loads {sorted(loaded & set(heavy))}"
        outside = {e for m in loaded for e in external[m]} & set(TENSORFLOW)
        assert not outside, f"importing tf_lth.{name} loads {sorted(outside)}"
    lazy_edges, lazy_external = graph()
    for name in (n for n in lazy_edges if under(n, NO_TENSORFLOW_EVER)):
        assert not lazy_external[name] & set(TENSORFLOW), f"tf_lth.{name} imports {lazy_external[name]}"
        assert not {m for m in lazy_edges[name] if under(m, ("keras2", "keras3", "util.tensorflow"))}, name


def test_each_flavour_is_its_own_package_and_its_keras_is_imported_in_one_place():
    edges, external = graph()
    top_edges, _ = graph(top_level_only=True)
    for mine, other in (("keras3", "keras2"), ("keras2", "keras3")):
        for name in (n for n in edges if under(n, (mine,))):
            assert not {m for m in edges[name] if under(m, (other,))}, f"tf_lth.{name} imports {other}"
            assert not {m for m in closure(name, top_edges) if under(m, (other,))}, f"tf_lth.{name} loads {other}"
    owners = {"tf_keras": ("keras2",), "tensorflow_model_optimization": ("keras2",), "keras": ("keras3",),
              "tensorflow": ("util.tensorflow", "keras2", "keras3")}
    for name, packages in external.items():
        for package, allowed in owners.items():
            if package in packages:
                assert under(name, allowed), f"tf_lth.{name} imports {package} (only {allowed} may)"


@pytest.mark.parametrize("rule", ["cycle", "tensorflow", "flavour"])
def test_a_violation_fails_the_rules(rule, tmp_path, monkeypatch):
    """Each rule fails when a module breaks it (a planted import in a copy of the tree)."""
    import shutil
    import sys
    copy = tmp_path / "tf_lth"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    planted = {"cycle": ("pruning/rates.py", "from tf_lth.ticket import ticket\n"),
               "tensorflow": ("pruning/rates.py", "def f():\n    import tensorflow\n"),
               "flavour": ("keras3/callback.py", "from tf_lth.keras2 import keras as k2\n")}[rule]
    with open(copy / planted[0], "a") as f:
        f.write("\n" + planted[1])
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", copy)
    test = {"cycle": test_no_import_cycle_in_the_package, "tensorflow": test_the_science_and_the_records_load_no_tensorflow_or_keras,
            "flavour": test_each_flavour_is_its_own_package_and_its_keras_is_imported_in_one_place}[rule]
    with pytest.raises(AssertionError):
        test()


LINES, CLASS_LINES = 400, 300  # a guide, not a reason to put code in the wrong place: only monsters fail


def test_modules_and_classes_are_not_monsters():
    too_big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines > LINES:
            too_big.append(f"{path.relative_to(PACKAGE)}: {lines} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > CLASS_LINES:
                too_big.append(f"{path.relative_to(PACKAGE)}: class {node.name} {node.end_lineno - node.lineno + 1} lines")
    assert not too_big, too_big
