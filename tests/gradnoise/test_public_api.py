"""The study uses gradnoise as any user would: through its public names only.

Two properties of the study's code (training/, analysis/, figures/, workflow/scripts/):
every import from gradnoise names a public package (``gradnoise`` or a subpackage, never
one of their modules) and only names that package lists in ``__all__``; and no attribute
with a leading underscore is read through another object (``self.logger._x``) or from a
name imported from gradnoise, so the study cannot reach into the logger's internals.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STUDY = ["training", "analysis", "figures", "workflow/scripts"]
PUBLIC_PACKAGES = {
    "gradnoise",
    "gradnoise.estimation",
    "gradnoise.injection",
    "gradnoise.control",
    "gradnoise.tap",
    "gradnoise.replay",
}
OWN_NAMES = {"self", "cls"}


def study_files() -> list[Path]:
    return sorted(p for d in STUDY for p in (REPO / d).rglob("*.py"))


def gradnoise_imports(tree: ast.AST) -> list[tuple[str, str, int]]:
    """(module, name, line) of each ``from gradnoise.. import name`` and ``import gradnoise..``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "gradnoise":
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [
                (alias.name, "", node.lineno)
                for alias in node.names
                if alias.name.split(".")[0] == "gradnoise"
            ]
    return found


def root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def foreign_private_reads(tree: ast.AST) -> list[tuple[str, int]]:
    """``self.a._y`` (a private read through an attribute) and ``g._y`` for g from gradnoise.

    Dunders aside; ``self._y`` is the module's own state.
    """
    from_gradnoise = {
        (alias.asname or alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom | ast.Import)
        and (getattr(node, "module", None) or node.names[0].name).split(".")[0] == "gradnoise"
        for alias in node.names
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or (attr.startswith("__") and attr.endswith("__")):
            continue
        value, root = node.value, root_name(node.value)
        through_attribute = isinstance(value, ast.Attribute) and root in OWN_NAMES
        if through_attribute or root in from_gradnoise:
            found.append((ast.unparse(node), node.lineno))
    return found


@pytest.mark.parametrize("path", study_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_study_imports_only_public_gradnoise_names(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for module, name, line in gradnoise_imports(tree):
        where = f"{path.relative_to(REPO)}:{line}"
        assert module in PUBLIC_PACKAGES, f"{where} imports module {module}, not a public package"
        if name:
            public = importlib.import_module(module).__all__
            assert name in public, f"{where}: {name} is not in {module}.__all__"


@pytest.mark.parametrize("path", study_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_study_reads_no_foreign_private_attribute(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    reads = foreign_private_reads(tree)
    assert not reads, f"{path.relative_to(REPO)} reads private attributes: {reads}"


def test_checks_catch_a_private_read_and_a_module_import():
    """The two checks fail on code that does what the study must not."""
    bad = ast.parse(
        "from gradnoise.estimation.logger import NoiseLogger\nheld = self.logger.integral._held\n"
    )
    assert gradnoise_imports(bad) == [("gradnoise.estimation.logger", "NoiseLogger", 1)]
    assert "gradnoise.estimation.logger" not in PUBLIC_PACKAGES
    assert foreign_private_reads(bad) == [("self.logger.integral._held", 2)]
    assert foreign_private_reads(ast.parse("self._x = 1\ntorch._dynamo.reset()\n")) == []
    imported = ast.parse("from gradnoise import NoiseLogger\nNoiseLogger._estimate\n")
    assert foreign_private_reads(imported) == [("NoiseLogger._estimate", 2)]


def test_every_public_name_resolves():
    for module in PUBLIC_PACKAGES:
        package = importlib.import_module(module)
        missing = [n for n in package.__all__ if not hasattr(package, n)]
        assert not missing, f"{module}.__all__ names {missing}, which it does not define"
