"""The house's layering, checked on the source (every import, at module level or inside a function):

storage <- annotation, services <- flows; `infra` and `alignline.config` are below flows; nothing imports `flows`
but `flows` (and tests/benchmarks); storage, annotation and services never import Prefect; no import circles.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"flows": "alignline.flows", "storage": "alignline.storage", "services": "alignline.services",
           "annotation": "alignline.annotation", "infra": "alignline.infra", "alignline": "alignline"}
# package -> the project packages it may import
ALLOWED = {
    "alignline.storage": {"alignline.storage", "alignline.config"},  # config: typed dataclasses, imports nothing
    "alignline.annotation": {"alignline.annotation", "alignline.storage"},
    "alignline.services": {"alignline.services", "alignline.storage", "alignline.config"},
    "alignline.infra": {"alignline.infra", "alignline.storage", "alignline.config"},
    "alignline.config": {"alignline.config"},
}
PACKAGES = ("alignline.flows", "alignline.storage", "alignline.services", "alignline.annotation", "alignline.infra",
            "alignline.config")


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(REPO).with_suffix("").parts
    name = ".".join([FOLDERS[folder], *rest]) if folder != "alignline" else ".".join(["alignline", *rest])
    return name.removesuffix(".__init__")


def modules() -> dict[str, Path]:
    found = {}
    for folder in FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Absolute names of everything the module imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def owner(name: str) -> str | None:
    return next((p for p in PACKAGES if name == p or name.startswith(p + ".")), None)


def test_each_package_imports_only_what_is_below_it():
    broken = []
    for name, path in modules().items():
        package = owner(name)
        allowed = ALLOWED.get(package)
        for imported in imports_of(name, path):
            target = owner(imported)
            if allowed is not None and target is not None and target not in allowed:
                broken.append(f"{name} imports {imported}")
            if package in ("alignline.storage", "alignline.annotation", "alignline.services") and \
                    imported.split(".")[0] == "prefect":
                broken.append(f"{name} imports {imported}")
    assert not broken, "\n".join(sorted(broken))


def test_no_import_circles_between_modules():
    mods = modules()
    graph = {name: {i for i in imports_of(name, path) if i in mods and i != name} for name, path in mods.items()}
    # A package's __init__ re-exporting its own modules is not a circle of dependencies: drop parent-package edges.
    graph = {n: {i for i in deps if not n.startswith(i + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_a_violation():
    """The checks above would catch a flows import from storage and a circle (guards against a vacuous pass)."""
    assert owner("alignline.flows.cli") == "alignline.flows"
    assert "alignline.flows" not in ALLOWED["alignline.storage"]
    assert "alignline.storage.catalog" in imports_of("alignline.storage", REPO / "storage" / "__init__.py")
    assert "alignline.storage.schemas" in imports_of("alignline.storage.catalog", REPO / "storage" / "catalog.py")
