"""The package's modules import each other in one direction: no cycle, counting imports made inside
functions (a lazy import hides a cycle from Python, not from the design)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tf_lth"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The tf_lth modules ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "tf_lth" and len(parts) > 1 and parts[1] in modules:
                found.add(parts[1])
    return found


def graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {m: imports_of(PACKAGE / f"{m}.py", modules) - {m} for m in modules}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges[m]):
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


def test_the_detector_sees_a_lazy_cycle():
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    edges = graph()
    assert "lottery" in edges["experiment"]  # the scan sees the package's imports
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle)


LINES, CLASS_LINES = 400, 250  # a guide, not a reason to put code in the wrong place: only monsters fail


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
