"""The dependency rule, read from every module's imports (AST): the library core of ``align`` never imports the
solver packages (only ``align/cli.py`` and ``align/app/`` may), ``matching`` and ``projectors`` never import each
other nor ``align.app`` / ``align.cli``, and no module imports another top-level package's private (``_``) module
or name. Imports inside functions count too. Tests follow the private-name rule: ``tests/<package>/`` may reach its
own package's private names (and align's first-level private core modules, as the solvers may), nothing else.
KNOWN lists the breaches left in files other branches own; the lead removes each entry once the fix is merged (a
listed breach that no longer exists fails, so the list stays true)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("align", "matching", "projectors", "benchmarks")

#: (file, imported module[.name]) breaches to remove after merging the branches that fix them.
KNOWN: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """(imported module, imported name or None) for every import statement, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                yield module, alias.name


def _files():
    for pkg in (*PACKAGES, "tests"):
        yield from sorted((ROOT / pkg).rglob("*.py"))


def _owner(path: Path) -> tuple[str, bool]:
    """(the package whose private names the file may use, whether it is a test): ``tests/matching/x.py`` is
    matching's; a test at the top of ``tests/`` belongs to no package."""
    parts = path.relative_to(ROOT).parts
    if parts[0] != "tests":
        return parts[0], False
    return (parts[1] if len(parts) > 2 and parts[1] in PACKAGES else "tests"), True


def _breaches():
    out = set()
    for path in _files():
        rel = str(path.relative_to(ROOT))
        me = _module_name(path)
        top, is_test = _owner(path)
        in_app = me == "align.cli" or me.startswith("align.app")
        for module, name in _imports(path):
            parts = module.split(".")
            other = parts[0]
            if other not in PACKAGES or other == top:
                continue
            full = module + (f".{name}" if name else "")
            if not is_test and top == "align" and other in ("matching", "projectors") and not in_app:
                out.add((rel, full, "the align core imports a solver package"))
            if not is_test and top in ("matching", "projectors") and (other in ("matching", "projectors")
                                                        or module.startswith(("align.app", "align.cli"))):
                out.add((rel, full, "a solver package imports another solver package or the app wing"))
            # align's own private core modules (align._validation, _backend, _io, _ridge, …) are the shared core
            # that DESIGN.md lets the solvers and benchmarks import; a private module below them is not
            sub = parts[2:] if other == "align" and len(parts) > 1 and parts[1].startswith("_") else parts[1:]
            private = [p for p in sub if p.startswith("_") and not p.startswith("__")]
            if private or (name is not None and name.startswith("_") and not name.startswith("__")):
                out.add((rel, full, "a private name of another package"))
            if not is_test and top in ("matching", "projectors") and module.startswith(("align.app", "align.cli")):
                out.add((rel, full, "upward import of the app wing"))
    return out


def test_no_import_breaks_the_dependency_rule():
    found = {(f, m) for f, m, _ in _breaches()}
    new = sorted(b for b in _breaches() if (b[0], b[1]) not in KNOWN)
    assert not new, "dependency rule broken:\n" + "\n".join(f"{f}: imports {m} ({why})" for f, m, why in new)
    stale = sorted(KNOWN - found)
    assert not stale, f"these KNOWN exceptions are fixed now; remove them from tests/test_imports.py: {stale}"


@pytest.mark.parametrize("where, source, expected", [
    ("align", "from matching._api import check_method_params\n", "a private name of another package"),
    ("align", "import projectors\n", "the align core imports a solver package"),
    ("tests/matching", "from projectors._base import check_encoders\n", "a private name of another package"),
    ("tests", "from align.app.demo import _limited_threads\n", "a private name of another package"),
    ("tests/matching", "from matching._api import check_match_memory\nimport projectors\n", None),
])
def test_the_scan_finds_a_breach(where, source, expected):
    """The scan itself: a core module with a solver import or a private cross-package import is reported; a test
    may reach its own package's private names and import any package."""
    fake = ROOT / where / "_imports_probe_tmp.py"
    fake.write_text(source)
    try:
        found = {why for f, _, why in _breaches() if f.endswith(f"{where}/_imports_probe_tmp.py")}
        assert expected in found if expected else not found
    finally:
        fake.unlink()


def test_no_import_cycle_between_the_packages():
    """align's core, matching and projectors form no cycle: core -> solvers never, solvers -> each other never."""
    edges = {}
    for path in _files():
        if _owner(path)[1]:
            continue
        me = _module_name(path)
        top = "align.app" if me == "align.cli" or me.startswith("align.app") else me.split(".")[0]
        for module, _ in _imports(path):
            other = "align.app" if module.startswith(("align.app", "align.cli")) else module.split(".")[0]
            if other in ("align", "align.app", "matching", "projectors") and other != top:
                edges.setdefault(top, set()).add(other)
    for a, targets in edges.items():
        for b in targets:
            assert a not in edges.get(b, set()), f"cycle between {a} and {b}"
