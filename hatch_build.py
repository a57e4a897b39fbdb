"""Build hook: compile the decide hot path's C extension where a C compiler is present.

``src/assay/engine/_core/_native.c`` becomes ``assay.engine._core._native`` (a few seconds
of compiling). An editable install (``pip install -e``) puts it beside its source, where
the ``src`` folder is imported from; a wheel carries it and is tagged for the platform.
Without a compiler (or with ``ASSAY_PURE_PYTHON`` set) nothing is built, the install goes
on, this hook prints one line saying so, and assay decides in pure Python (the same
answers, slower; ``assay.engine._core._compiled.STATUS`` says which path runs).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("src") / "assay" / "engine" / "_core" / "_native.c"
MODULE = "assay.engine._core._native"
NOTICE = "assay: the compiled decide path was not built ({}); decide runs in pure Python"


def build_extension(root: Path, destination: Path) -> Path | str:
    """Compile the extension into ``destination``: its path, or why it was not built (one
    line). Never raises: a failed build leaves the pure-Python path."""
    if os.environ.get("ASSAY_PURE_PYTHON", "") not in ("", "0"):
        return "ASSAY_PURE_PYTHON is set"
    try:
        from setuptools import Distribution, Extension
        from setuptools.command.build_ext import build_ext

        flags = [] if sys.platform == "win32" else ["-O2"]
        header = str(root / SOURCE.with_name("_native_eval.h"))
        extension = Extension(
            MODULE, [str(root / SOURCE)], depends=[header], extra_compile_args=flags
        )
        with tempfile.TemporaryDirectory() as work:
            command = build_ext(Distribution({"name": "assay", "ext_modules": [extension]}))
            command.build_temp = os.path.join(work, "temp")
            command.build_lib = os.path.join(work, "lib")
            command.ensure_finalized()
            command.run()
            built = Path(command.get_ext_fullpath(MODULE))
            destination.mkdir(parents=True, exist_ok=True)
            target = destination / built.name
            shutil.copyfile(built, target)
            return target
    except (Exception, SystemExit) as exc:  # a missing compiler surfaces in many types
        reason = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {reason[0] if reason else 'no detail'}"


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        if version == "editable":
            destination = root / SOURCE.parent
            # A build of an older source must not outlive a failed rebuild.
            for old in destination.glob("_native.*"):
                if old.suffix in (".so", ".pyd"):
                    old.unlink()
        else:
            self._work = tempfile.mkdtemp(prefix="assay-native-")
            destination = Path(self._work)
        result = build_extension(root, destination)
        if isinstance(result, str):
            self.app.display_warning(NOTICE.format(result))
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(result)] = f"assay/engine/_core/{result.name}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
