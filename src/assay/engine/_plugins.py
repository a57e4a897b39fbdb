"""The plugin manager: built-ins first, then every ``assay.plugins`` entry point."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pluggy

from assay.engine import hookspecs
from assay.engine._core import OperatorFactory

log = logging.getLogger("assay.engine.plugins")


def build_plugin_manager(
    builtins: Iterable[object], *, load_entry_points: bool = True
) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for plugin in builtins:
        pm.register(plugin)
    if load_entry_points:
        loaded = pm.load_setuptools_entrypoints(hookspecs.ENTRY_POINT_GROUP)
        if loaded:
            log.info("loaded %d plugin(s) from entry points", loaded)
    pm.check_pending()
    return pm


def collect_operators(pm: pluggy.PluginManager) -> dict[str, OperatorFactory]:
    """Every plugin's targeting operators. pluggy answers last-registered first, so the
    answers are applied in reverse: a later plugin overrides an earlier one's operator."""
    operators: dict[str, OperatorFactory] = {}
    for answer in reversed(pm.hook.assay_targeting_operators()):
        for name, factory in answer.items():
            if not name.startswith("$"):
                raise ValueError(f"targeting operator {name!r} must start with '$'")
            operators[name] = factory
    return operators
