"""A private member (``_name``) of a tf-lth module, class or object is used only in the module that
defines it: in ``tf_lth/``, ``scripts/`` and ``tests/`` everything else goes through public names.

The scan is static (no import): each tf-lth module's private names are what it defines (functions,
classes, module or class constants, ``self._x = ...``); a use is an attribute ``obj._x``, a
``from tf_lth.m import _x``, or a ``getattr``/``setattr``/``monkeypatch.setattr`` with the name as a
string. Names that only third-party objects define (``model._is_graph_network``) are not ours.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tf_lth"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def defined_private_names(path: Path) -> set[str]:
    """The private names ``path`` defines: top-level and class-level definitions, ``self._x = ...``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Name):
                        found.add(t.id)
                    elif isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in ("self", "cls"):
                        found.add(t.attr)
    return {n for n in found if _is_private(n)}


def private_uses(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every private name ``path`` reaches through an object or an import."""
    uses = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            uses.append((node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tf_lth"):
            uses += [(node.lineno, a.name) for a in node.names if _is_private(a.name)]
            uses += [(node.lineno, part) for part in node.module.split(".") if _is_private(part)]
        elif isinstance(node, ast.Import):
            uses += [(node.lineno, part) for a in node.names if a.name.startswith("tf_lth")
                     for part in a.name.split(".") if _is_private(part)]
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("getattr", "setattr", "hasattr", "delattr", "setitem") and len(node.args) >= 2:
                arg = node.args[1]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _is_private(arg.value):
                    uses.append((node.lineno, arg.value))
    return uses


def violations() -> list[str]:
    modules = {p: defined_private_names(p) for p in PACKAGE.rglob("*.py")}
    ours = {}
    for path, names in modules.items():
        for name in names:
            ours.setdefault(name, set()).add(path)
    ours["_" + "keras"] = {PACKAGE / "_keras.py"}  # the old private flavour module must not come back
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "scripts").glob("*.py"), *(ROOT / "tests").rglob("*.py")]
    found = []
    for path in sorted(files):
        for line, name in private_uses(path):
            owners = ours.get(name)
            if owners and path not in owners:
                where = ", ".join(sorted(p.relative_to(ROOT).as_posix() for p in owners))
                found.append(f"{path.relative_to(ROOT)}:{line} uses {name} of {where}")
    return found


def test_the_scan_sees_a_private_use(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("class T:\n    def __init__(self):\n        self._w = 1\n    def _step(self):\n        pass\n"
                      "_LIMIT = 3\n")
    assert defined_private_names(module) == {"_w", "_step", "_LIMIT"}
    user = tmp_path / "u.py"
    user.write_text("from tf_lth.m import _LIMIT\nt._w\nsetattr(t, '_step', None)\nt.__dict__\n")
    assert private_uses(user) == [(1, "_LIMIT"), (2, "_w"), (3, "_step")]


def test_no_private_member_is_used_outside_its_module():
    found = violations()
    assert not found, "\n".join(found)
