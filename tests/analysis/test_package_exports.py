"""The analysis subpackages' exports: every name in ``__all__`` is the object of the
module that defines it (the names load lazily, so a stale list fails only when used)."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["stats", "hypotheses", "exploratory", "runs", "audit", "report"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_is_its_modules_object(package):
    pkg = importlib.import_module(f"analysis.{package}")
    assert pkg.__all__, f"analysis.{package} exports nothing"
    assert len(set(pkg.__all__)) == len(pkg.__all__), f"analysis.{package}: a name twice"
    for name in pkg.__all__:
        value = getattr(pkg, name)
        owner = importlib.import_module(f"analysis.{package}.{pkg._OWNER[name]}")
        assert getattr(owner, name) is value, f"analysis.{package}.{name}"


@pytest.mark.parametrize("package", PACKAGES)
def test_an_unknown_name_raises_attribute_error(package):
    pkg = importlib.import_module(f"analysis.{package}")
    with pytest.raises(AttributeError, match="no_such_name"):
        pkg.no_such_name  # noqa: B018 (the lookup is the test)
