"""The package's layout: each subpackage imports only the ones before it on the user's path, and
no module imports itself round a circle. Read from the source with ``ast`` (every import counts,
lazy ones inside functions and ``TYPE_CHECKING`` ones too), so nothing needs importing."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "mutransfer"
# The stages, lowest first; a module may import from its own stage and the ones before it.
ORDER = ("optim", "core", "models", "training", "runs", "tuning", "projection", "validation")
TOP = ("cli", "experiments", "bench")  # may import anything; nothing below may import them
# The short public names of modules that live in a stage (mutransfer/__init__.py).
ALIASES = {"zoo": "models", "hf": "models", "data": "training"}
ANYWHERE = ("_version",)  # imports nothing; every module may import it


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported mutransfer module, line) for every import statement in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for alias in node.names:  # `from pkg import module` imports the module itself
                child = f"{base}.{alias.name}"
                found.append((child if child in known else base, node.lineno))
    return [(target, line) for target, line in found if target.split(".")[0] == "mutransfer"]


def stage(module: str) -> str:
    """The stage a dotted module belongs to ("" for the package's own __init__)."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else ""
    return ALIASES.get(head, head)


def rank(stage_name: str) -> float:
    if stage_name in ORDER:
        return ORDER.index(stage_name)
    if stage_name in ANYWHERE:
        return -1
    return len(ORDER)  # the top: cli, experiments, bench and mutransfer/__init__ itself


def upward_imports(known: dict[str, Path]) -> list[str]:
    bad = []
    for name, path in known.items():
        own = stage(name)
        if own in TOP or own in ("", "__main__"):
            continue
        for target, line in imports(name, path, known):
            theirs = stage(target)
            if rank(theirs) > rank(own):
                bad.append(f"{name}:{line} ({own}) imports {target} "
                           f"({theirs or 'the top-level package'})")
    return bad


def is_private(module: str) -> bool:
    """Whether a dotted module is private: a part after the package's name starts with "_"."""
    return any(part.startswith("_") and part not in ("__init__", "__main__", *ANYWHERE)
               for part in module.split(".")[1:])


def private_imports(known: dict[str, Path]) -> list[str]:
    """Imports of another stage's private module (``mutransfer.tuning._sweep`` from projection):
    stages talk through each other's public names only."""
    bad = []
    for name, path in known.items():
        own = stage(name)
        for target, line in imports(name, path, known):
            theirs = stage(target)
            if theirs != own and theirs not in ANYWHERE and is_private(target):
                bad.append(f"{name}:{line} ({own or 'the top-level package'}) imports {target}, "
                           f"private to {theirs}: import its public name from mutransfer.{theirs}")
    return bad


def circles(known: dict[str, Path]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each an import circle."""
    graph = {n: sorted({t for t, _ in imports(n, p, known) if t in known and t != n})
             for n, p in known.items()}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_module_is_in_a_stage():
    strays = [n for n in modules() if stage(n) not in (*ORDER, *TOP, *ANYWHERE, "", "__main__")]
    assert strays == [], f"modules outside every stage: {strays}; move each into its stage's subpackage"


def test_no_module_imports_from_a_later_stage():
    bad = upward_imports(modules())
    assert bad == [], "imports that point up the path:\n" + "\n".join(bad)


def test_no_stage_imports_another_stages_private_module():
    bad = private_imports(modules())
    assert bad == [], "imports of another stage's private module:\n" + "\n".join(bad)


@pytest.mark.parametrize("source, caught", [
    ("from mutransfer.optim._muon import Muon\n", True),
    ("def f():\n    from mutransfer.models.zoo import gpt\n", False),   # a public module
    ("from mutransfer.optim import Muon\n", False),
    ("from mutransfer.core._roles import Role\n", False),               # its own stage
    ("import mutransfer.training._loop\n", True),
])
def test_the_check_catches_a_private_import(tmp_path, source, caught):
    pkg = tmp_path / "mutransfer"
    for sub in ("core", "optim", "models", "training"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    for module in ("optim/_muon.py", "models/zoo.py", "core/_roles.py", "training/_loop.py"):
        (pkg / module).write_text("")
    (pkg / "core" / "_bad.py").write_text(source)
    found = private_imports(modules(pkg))
    assert len(found) == int(caught)
    if caught:
        assert "mutransfer.core._bad:" in found[0] and "import its public name" in found[0]


def test_no_import_circles():
    found = circles(modules())
    assert found == [], f"import circles: {found}"


def test_no_public_function_shares_a_module_name():
    """``mutransfer.sweep`` is the function: no module on that path carries the same name."""
    import mutransfer

    clashes = []
    for package in ("mutransfer", *(f"mutransfer.{s}" for s in ORDER)):
        folder = ROOT.parent.joinpath(*package.split("."))
        names = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
        obj = mutransfer if package == "mutransfer" else getattr(mutransfer, package.split(".")[1])
        for public in getattr(obj, "__all__", ()):
            value = getattr(obj, public)
            if callable(value) and not isinstance(value, type(mutransfer)) and public in names:
                clashes.append(f"{package}.{public}")
    assert clashes == []


@pytest.mark.parametrize("source, expected", [
    ("from mutransfer.validation import validate\n", "imports mutransfer.validation"),
    ("def f():\n    from mutransfer.runs._config import load_config\n", "imports mutransfer.runs._config"),
    ("import mutransfer.zoo\n", "imports mutransfer.zoo (models)"),
])
def test_the_check_catches_an_upward_import(tmp_path, source, expected):
    pkg = tmp_path / "mutransfer"
    (pkg / "core").mkdir(parents=True)
    for sub in ("", "core"):
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "core" / "_bad.py").write_text(source)
    found = upward_imports(modules(pkg))
    assert len(found) == 1 and expected in found[0]


def test_the_check_catches_a_circle(tmp_path):
    pkg = tmp_path / "mutransfer"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "_a.py").write_text("def f():\n    from mutransfer.core._b import g\n")
    (pkg / "core" / "_b.py").write_text("from mutransfer.core._a import f\n")
    assert circles(modules(pkg)) == [["mutransfer.core._a", "mutransfer.core._b"]]


def test_the_package_docstring_defines_each_noun():
    """The glossary: every noun the package uses in more than one sense elsewhere has one row."""
    import mutransfer

    rows = {line.split("|")[1].strip() for line in mutransfer.__doc__.splitlines() if line.startswith("| ")}
    nouns = {"plan", "transfer plan", "role", "usage", "proxy", "base", "target", "trial", "study"}
    assert nouns <= rows, f"missing from the glossary: {sorted(nouns - rows)}"


MAX_FUNCTION_LINES = 120  # a function longer than this does several things: split it


def test_no_function_is_over_120_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {size} lines")
    assert long == [], "functions over 120 lines:\n" + "\n".join(long)
