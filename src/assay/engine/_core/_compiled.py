"""Which decide path runs: the compiled one or pure Python.

The compiled path is the C extension ``_native`` (``_native.c``), built from the
project's files when it is installed on a machine with a C compiler (``hatch_build.py``).
Where it was not built, where it is stale, or where ``ASSAY_PURE_PYTHON`` is set to
anything but ``0``, decide runs in pure Python: the same answers, slower. ``STATUS`` says
which and why in one line; the engine logs it once when that is not the compiled path.

The pure-Python functions in ``_decide`` stay the reference: the compiled path hands them
everything it does not handle itself, and the tests run both paths (``use_compiled``).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Final

__all__ = ["ABI", "STATUS", "native", "use_compiled"]

ABI: Final = 2
"""The interface version ``_native.c`` must declare (its ``NATIVE_ABI``)."""


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get("ASSAY_PURE_PYTHON", "") not in ("", "0"):
        return None, "pure Python (ASSAY_PURE_PYTHON is set)"
    try:
        from assay.engine._core import _native
    except ImportError:
        return None, (
            "pure Python: the compiled decide path was not built (no C compiler when assay "
            "was installed, or installed before the path existed: reinstall assay to build "
            "it); decide gives the same answers, slower"
        )
    if getattr(_native, "ABI", None) != ABI:
        return None, "pure Python: the compiled decide path is stale (reinstall assay to rebuild)"
    return _native, "compiled"


native, STATUS = _load()
"""The extension module (None on the pure-Python path), and which path runs."""


def use_compiled(enabled: bool) -> bool:
    """Turn the compiled path on or off for this process (tests run both); returns whether
    it was on. Without the extension it is always off."""
    if native is None:
        return False
    previous: bool = native.set_enabled(enabled)
    return previous
