"""The layers hold: each package imports only the packages its layer may use, and no module
imports itself round a cycle (``docs/architecture.md``).

Every ``.py`` file of the product packages is read with ``ast``: imports at any depth (inside
functions too, and under ``if TYPE_CHECKING``), relative ones resolved. The standard library
and third-party packages are left out; so is ``from __future__``. A package that does not
exist in the checkout is skipped.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_BELOW_SERVICE = {"core", "backprop", "tuning", "store", "messaging"}
# bottom to top: the project packages each one may import
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "backprop": {"core"},
    "tuning": {"core", "backprop"},
    "store": {"core", "backprop", "tuning"},
    "messaging": {"backprop"},
    "service": _BELOW_SERVICE,
    "worker": _BELOW_SERVICE | {"service"},
    "api": _BELOW_SERVICE | {"service"},
    "web": _BELOW_SERVICE | {"service", "api"},
    "cli": _BELOW_SERVICE | {"service", "worker", "api", "web"},
    "migrations": {"store", "backprop"},
}
# the checkout's other packages: no product code imports them
NOT_PRODUCT = {"tests", "benchmarks", "examples"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the module imported, dotted (the longest known module it names)
    path: Path
    line: int

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line}"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules(root: Path) -> dict[str, Path]:
    """Every module of the product packages in the checkout at ``root``, by dotted name."""
    modules = {}
    for package in ALLOWED:
        for path in sorted((root / package).rglob("*.py")):
            modules[module_name(path, root)] = path
    return modules


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement asks for: ``a.b`` for ``import a.b``, and both
    ``a.b`` and ``a.b.c`` for ``from a.b import c`` (``c`` may be a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the importing module's package, `level - 1` up
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        stem = ".".join(base + ([node.module] if node.module else []))
    else:
        stem = node.module
    return [stem] + [f"{stem}.{alias.name}" for alias in node.names if alias.name != "*"]


def project_imports(root: Path) -> list[Import]:
    """Each import of a project module by a product module."""
    modules = product_modules(root)
    project = set(ALLOWED) | NOT_PRODUCT
    found = []
    for source, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = _imported_names(node, source, path.name == "__init__.py")
            if isinstance(node, ast.ImportFrom):
                # `from a import b`: the module a.b when there is one, else the module a
                stem, members = names[0], names[1:]
                submodules = [name for name in members if name in modules]
                names = submodules + ([stem] if len(submodules) < len(members) else [])
            for name in names:
                if name.split(".")[0] not in project:
                    continue
                target = name
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                found.append(Import(source, target, path, node.lineno))
    return found


def layer_violations(root: Path) -> list[str]:
    """Each import of a package that the importing package's layer may not use."""
    violations = []
    for imp in project_imports(root):
        importer, imported = imp.source.split(".")[0], imp.target.split(".")[0]
        if importer != imported and imported not in ALLOWED[importer]:
            violations.append(f"{imp.where(root)}: {imp.source} imports {imp.target}")
    return sorted(set(violations))


def cycles(root: Path) -> list[list[Import]]:
    """The import cycles between modules: for each strongly connected component of the
    module graph with more than one module (or a module importing itself), its edges."""
    edges: dict[str, list[Import]] = {}
    for imp in project_imports(root):
        edges.setdefault(imp.source, []).append(imp)
    components = _strongly_connected(
        {source: {imp.target for imp in out} for source, out in edges.items()}
    )
    found = []
    for component in components:
        inside = [
            imp for module in component for imp in edges.get(module, []) if imp.target in component
        ]
        if len(component) > 1 or inside:
            found.append(sorted(inside, key=lambda imp: (imp.source, imp.line)))
    return sorted(found, key=lambda edges: edges[0].source)


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (a deep import chain would overflow the recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def _cycle_report(found: list[list[Import]], root: Path) -> str:
    lines = []
    for edges in found:
        modules = sorted({imp.source for imp in edges})
        lines.append(f"cycle between {', '.join(modules)}:")
        lines += [f"  {imp.where(root)}: {imp.source} imports {imp.target}" for imp in edges]
    return "\n".join(lines)


def test_the_product_packages_are_read():
    modules = product_modules(ROOT)
    assert {"core", "backprop.settings", "store.models", "worker.tasks", "api"} <= set(modules)
    assert any(imp.target == "backprop.settings" for imp in project_imports(ROOT))


def test_each_package_imports_only_what_its_layer_may_use():
    violations = layer_violations(ROOT)
    if violations:
        pytest.fail(f"{len(violations)} imports against the layers:\n" + "\n".join(violations))


def test_no_module_imports_itself_round_a_cycle():
    found = cycles(ROOT)
    if found:
        pytest.fail(f"{len(found)} import cycles:\n" + _cycle_report(found, ROOT))


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    files = {
        "core/__init__.py": "from .network import Network\n",
        "core/network.py": "import numpy as np\n\ndef f():\n    from core.training import t\n",
        "core/training.py": "from __future__ import annotations\nfrom . import network\n",
        "backprop/__init__.py": "",
        "backprop/settings.py": "import core\n",
        "backprop/urls.py": "def check():\n    from worker import webhooks\n",
        "worker/__init__.py": "",
        "worker/webhooks.py": "from backprop.urls import check\nfrom ..store import rows\n",
        "store/__init__.py": "",
        "store/rows.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    # worker/webhooks.py's `from ..store import rows` is store.rows, which worker may import
    assert layer_violations(tmp_path) == [
        "backprop/urls.py:2: backprop.urls imports worker.webhooks"
    ]
    found = cycles(tmp_path)
    assert [sorted({imp.source for imp in edges}) for edges in found] == [
        ["backprop.urls", "worker.webhooks"],
        ["core.network", "core.training"],
    ]
    assert "core/network.py:4: core.network imports core.training" in _cycle_report(found, tmp_path)
