"""The wheel and the image hold every package the code imports.

The image once left out ``tuning/`` and every compose user's API and workers crash-looped on
``import worker.training``. Three lists must agree: the packages setuptools finds with
pyproject's include, the repository's packages that the shipped code imports, and what the
Dockerfile's builder stage copies. The compose stage (``make test-compose``) imports each of
them inside the built image.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import tomllib
from pathlib import Path

from setuptools import find_packages

from tests.test_layers import ALLOWED

ROOT = Path(__file__).resolve().parents[1]


def included() -> list[str]:
    """pyproject's [tool.setuptools.packages.find] include patterns."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return pyproject["tool"]["setuptools"]["packages"]["find"]["include"]


def shipped_packages() -> list[str]:
    """Every package (dotted) the wheel gets, as `pip wheel .` finds them."""
    return find_packages(where=ROOT, include=included())


def top_level(packages) -> set[str]:
    return {name.split(".")[0] for name in packages}


def repository_packages() -> set[str]:
    """The checkout's top-level directories that are packages."""
    return {path.parent.name for path in ROOT.glob("*/__init__.py")}


def imported_names(directory: Path) -> set[str]:
    """The top-level names of absolute imports in every module under directory."""
    names = set()
    for path in directory.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def copied_sources(stage) -> list[str]:
    """The context paths a stage's COPY instructions take (not those --from another stage)."""
    sources = []
    for instruction, arguments in stage:
        words = arguments.split()
        if instruction == "COPY" and not any(w.startswith("--from") for w in words):
            sources += [w.rstrip("/") for w in words if not w.startswith("--")][:-1]
    return sources


def dockerignored(name: str) -> bool:
    """Whether .dockerignore leaves the top-level path `name` out (last match wins)."""
    ignored = False
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        exclude = not pattern.startswith("!")
        if fnmatch.fnmatch(name, pattern.lstrip("!").strip("/")):
            ignored = exclude
    return ignored


def in_build_context(name: str) -> bool:
    """Whether the builder stage (the first) copies the top-level path `name` into /src."""
    sources = copied_sources(dockerfile_stages()[0])
    if "." in sources:
        return not dockerignored(name)
    return name in sources


def test_every_repository_package_the_code_imports_is_shipped():
    shipped = top_level(shipped_packages())
    imported = set()
    for package in shipped | {"migrations"}:  # the image runs migrations/env.py too
        imported |= imported_names(ROOT / package)
    missing = (imported & repository_packages()) - shipped
    assert not missing, f"imported but not in [tool.setuptools.packages.find] include: {missing}"


def test_every_package_of_the_layers_is_included():
    """Each layer's package (tests/test_layers.py), also one not in the checkout yet; the
    image copies migrations/ beside alembic.ini instead."""
    packages = set(ALLOWED) - {"migrations"}
    missing = {name for name in packages if not any(fnmatch.fnmatch(name, p) for p in included())}
    assert not missing, f"not in [tool.setuptools.packages.find] include: {missing}"


def test_every_shipped_package_has_its_subpackages():
    for package in shipped_packages():
        for child in (ROOT / package.replace(".", "/")).glob("*/__init__.py"):
            assert f"{package}.{child.parent.name}" in shipped_packages(), child


def test_the_builder_stage_gets_every_package_and_what_the_wheel_needs():
    needed = top_level(shipped_packages()) | {"pyproject.toml", "README.md"}
    missing = {name for name in needed if not in_build_context(name)}
    assert not missing, f"the Dockerfile's builder stage never sees {missing}"


def test_the_final_stage_installs_wheels_and_keeps_the_migrations():
    final = dockerfile_stages()[-1]
    assert len(dockerfile_stages()) >= 2, "a builder stage keeps build tools out of the image"
    assert {"alembic.ini", "migrations"} <= set(copied_sources(final))
    runs = " ".join(arguments for instruction, arguments in final if instruction == "RUN")
    assert "--no-index" in runs and "from=build" in runs, "only the builder's wheels go in"
    assert ("USER", "backprop") in final, "the services run as a non-root user"


def test_the_checks_above_catch_a_forgotten_package(monkeypatch):
    """The old Dockerfile's explicit COPY list without tuning/ fails the builder-stage check."""
    old = "FROM python:3.11-slim\nCOPY pyproject.toml README.md ./\n" + "".join(
        f"COPY {name} ./{name}\n" for name in ("core", "api", "worker", "store", "backprop")
    )
    stages = [[("FROM", "")] + [("COPY", line[5:]) for line in old.splitlines()[1:]]]
    monkeypatch.setattr(f"{__name__}.dockerfile_stages", lambda: stages)
    assert in_build_context("core") and not in_build_context("tuning")
