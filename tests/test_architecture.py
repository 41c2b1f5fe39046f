"""The package's shape, checked: layers, no import cycles, module and function sizes, a small package root.

- The layering is the import-linter configuration in pyproject.toml ([tool.importlinter]); `make test` runs
  `lint-imports` too. Imports inside functions count.
- No two modules import each other, directly or round a longer loop, imports inside functions included (grimp's
  graph of cnnkit, the one import-linter builds).
- No module under src/cnnkit is over 500 lines and no function or method over 50 lines, unless the file says why:
  a comment line `# size: <reason>` anywhere in the file exempts that file from both limits.
- At most 12 modules sit at the package root (src/cnnkit/*.py).
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cnnkit"
PYPROJECT = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 50
MAX_ROOT_MODULES = 12
SIZE_EXEMPTION = "# size:"


def _lint_imports(*args: str, pythonpath: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_lint_imports_passes(tmp_path: Path) -> None:
    done = _lint_imports(str(PYPROJECT), pythonpath=ROOT / "src", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_lint_imports_fails_on_a_back_import(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "cnnkit", ignore=shutil.ignore_patterns("__pycache__"))
    errors = src / "cnnkit" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport cnnkit.api  # noqa: E402, F401  (a deliberate back-import)\n")
    done = _lint_imports(str(PYPROJECT), "--contract", "layers", pythonpath=src, cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "cnnkit layers" in out and "BROKEN" in out, out
    assert "cnnkit.errors is not allowed to import cnnkit.api" in out, out
    assert "cnnkit.errors -> cnnkit.api" in out, out


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative), each sorted."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            nxt = next(successors, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(edges.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def _describe(graph, component: list[str]) -> str:
    members = set(component)
    lines = [f"cycle of {len(component)} modules: {', '.join(component)}"]
    for importer in component:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
            at = sorted({d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)})
            lines.append(f"    {importer} -> {imported} (l.{', l.'.join(map(str, at))})")
    return "\n".join(lines)


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("cnnkit", cache_dir=None)
    cycles = _cycles(graph)
    two_way = sorted({tuple(sorted((a, b))) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                      if a in graph.find_modules_directly_imported_by(b)})
    assert not cycles, ("modules that import each other directly:\n" + "".join(f"    {a} <-> {b}\n" for a, b in two_way)
                        + "import cycles (each a strongly connected set of modules, with its imports):\n"
                        + "\n".join(_describe(graph, c) for c in cycles))


def _size_offences(text: str, name: str) -> list[str]:
    """What in one module's source is over the limits: [] when a `# size: <reason>` comment line exempts it."""
    if any(line.lstrip().startswith(SIZE_EXEMPTION) for line in text.splitlines()):
        return []
    offences = []
    n_lines = len(text.splitlines())
    if n_lines > MAX_MODULE_LINES:
        offences.append(f"{name}: {n_lines} lines")
    for node in ast.walk(ast.parse(text, filename=name)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                offences.append(f"{name}:{node.lineno} {node.name}(): {length} lines")
    return offences


def test_module_and_function_sizes() -> None:
    offences = [o for path in sorted(PACKAGE.rglob("*.py"))
                for o in _size_offences(path.read_text(), str(path.relative_to(PACKAGE.parent)))]
    assert not offences, (f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function, and no "
                          f"`{SIZE_EXEMPTION} <reason>` line in the file:\n" + "\n".join(offences))


def test_size_limits_and_the_exemption() -> None:
    long_function = "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    assert _size_offences(long_function, "m.py") == [f"m.py:1 f(): {MAX_FUNCTION_LINES + 1} lines"]
    long_module = "x = 1\n" * (MAX_MODULE_LINES + 1)
    assert _size_offences(long_module, "m.py") == [f"m.py: {MAX_MODULE_LINES + 1} lines"]
    assert _size_offences("x = 1\n" * MAX_MODULE_LINES, "m.py") == []
    assert _size_offences("# size: one table that reads best whole\n" + long_function + long_module, "m.py") == []


def test_package_root_is_small() -> None:
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_ROOT_MODULES, f"{len(modules)} modules at the package root: {modules}"


def test_every_module_has_its_test_file_at_the_matching_path() -> None:
    """Tests mirror the package: src/cnnkit/a/b.py is tested in tests/a/test_b.py (a package's face, __init__.py,
    and __main__.py excepted)."""
    tests = PACKAGE.parent.parent / "tests"
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        relative = path.relative_to(PACKAGE)
        expected = tests / relative.parent / f"test_{relative.name}"
        if not expected.is_file():
            missing.append(f"{relative} → {expected.relative_to(tests.parent)}")
    assert not missing, "modules without their test file:\n" + "\n".join(missing)
