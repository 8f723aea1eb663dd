"""The subpackages' exports (analysis and training): every name in ``__all__`` is the
object of the module that defines it (the names load lazily, so a stale list fails only
when used), and none is named like a module of its package (the module, once imported,
would stand in for it)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

ANALYSIS = ["stats", "hypotheses", "exploratory", "runs", "audit", "report"]
TRAINING = ["data", "regression", "evaluation", "scale"]
PACKAGES = [f"analysis.{name}" for name in ANALYSIS] + [f"training.{name}" for name in TRAINING]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_is_its_modules_object(package):
    pkg = importlib.import_module(package)
    assert pkg.__all__, f"{package} exports nothing"
    assert len(set(pkg.__all__)) == len(pkg.__all__), f"{package}: a name twice"
    modules = {info.name for info in pkgutil.iter_modules(pkg.__path__)}
    assert set(pkg._OWNER.values()) <= modules, f"{package}: a name of no module"
    assert not set(pkg.__all__) & modules, f"{package}: a name that is a module's"
    for name in pkg.__all__:
        value = getattr(pkg, name)
        owner = importlib.import_module(f"{package}.{pkg._OWNER[name]}")
        assert getattr(owner, name) is value, f"{package}.{name}"


@pytest.mark.parametrize("package", PACKAGES)
def test_an_unknown_name_raises_attribute_error(package):
    pkg = importlib.import_module(package)
    with pytest.raises(AttributeError, match="no_such_name"):
        pkg.no_such_name  # noqa: B018 (the lookup is the test)
