"""The lazy exports of the subpackages of ``analysis`` and ``training`` (PEP 562).

A subpackage lists, per module, the public names that module defines; a name is
imported from its module when it is first asked for, so importing one module of the
package imports neither the others nor their libraries (statistics, torch, lm-eval).
It lives in the root layer because both stages use it and neither may import the other.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module


def lazy_exports(
    package: str, modules: dict[str, tuple[str, ...]]
) -> tuple[list[str], dict[str, str], Callable[[str], object], Callable[[], list[str]]]:
    """``__all__``, name -> owning module, ``__getattr__`` and ``__dir__`` of ``package``."""
    owner = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name in owner:
            return getattr(import_module(f"{package}.{owner[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *owner})

    return list(owner), owner, __getattr__, __dir__
