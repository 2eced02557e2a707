"""The package layout CONTRIBUTING.md describes: imports only go to the same or an earlier phase,
and no module outside ``synth/`` grows past ``MAX_LINES`` lines.

Every ``import`` and ``from ... import`` of every module is read with :mod:`ast`, those inside
functions too, so a lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from metapose.config import is_model_name
from metapose.models.zoo import ZOO

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "metapose"
CONTRIBUTING = PACKAGE.parents[1] / "CONTRIBUTING.md"

# The phases in dependency order: a module may import its own phase and earlier ones only.
# The first phase is the top-level modules (facts, configs, errors, device policy, files).
PHASES: tuple[tuple[str, ...], ...] = (
    ("skeleton", "config", "errors", "device", "files", "progress", "provenance"),
    ("models",),
    ("data",),
    ("synth",),
    ("training",),
    ("inference",),
    ("evaluation",),
    ("experiment",),
    ("cli",),
)
MAX_LINES = 500
EXEMPT_FROM_SIZE = ("synth",)  # procedural scenes: long tables of numbers, one concept a module


def phase_of(module: str) -> int:
    """The phase of ``metapose.<first>...``; ``metapose`` itself (the version) is phase 0."""
    parts = module.split(".")
    assert parts[0] == "metapose", module
    if len(parts) == 1:
        return 0
    for i, names in enumerate(PHASES):
        if parts[1] in names:
            return i
    raise AssertionError(f"{module}: not in any phase of tests/test_layout.py")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every metapose import in ``path`` (relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "metapose"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if base.split(".")[0] == "metapose":
                out.append((node.lineno, base))
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_phase() -> None:
    for path in MODULES:
        phase_of(module_name(path))


def test_imports_go_to_the_same_or_an_earlier_phase() -> None:
    upward = []
    for path in MODULES:
        own = phase_of(module_name(path))
        for line, target in imported_modules(path):
            if phase_of(target) > own:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not upward, "imports from a later phase:\n" + "\n".join(upward)


def test_no_module_outside_synth_is_long() -> None:
    long = []
    for path in MODULES:
        if path.relative_to(PACKAGE).parts[0] in EXEMPT_FROM_SIZE:
            continue
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            long.append(f"{path.relative_to(PACKAGE.parent)}: {lines} lines")
    assert not long, f"modules over {MAX_LINES} lines (split them at a seam):\n" + "\n".join(long)


def test_contributing_lists_the_same_phases() -> None:
    """CONTRIBUTING.md's phase line names the packages in this order."""
    text = CONTRIBUTING.read_text()
    match = re.search(r"^Phases: (.+)$", text, flags=re.MULTILINE)
    assert match, "CONTRIBUTING.md has no 'Phases: ...' line"
    written = [p.strip(" `") for p in match.group(1).split("->")]
    assert written == ["top-level modules", *(names[0] + "/" for names in PHASES[1:])]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_bundled_model_names_read_as_names_in_configs(name: str) -> None:
    """A config's ``init`` keeps a bundled model's name, not a path joined to the YAML's folder."""
    assert is_model_name(name)
