"""The plugin manager: built-ins first, then every ``assay.plugins`` entry point."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pluggy

from assay.engine import hookspecs
from assay.engine._core import ConditionCompiler, ConditionError, OperatorFactory
from assay.engine._error_codes import ERROR_CODES
from assay.engine._errors import ValidationFailed

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
            # DEBUG: part of starting up, which says nothing unless something is wrong.
            names = sorted(name for name, _ in pm.list_name_plugin() if name is not None)
            log.debug("loaded %d plugin(s) from entry points: %s", loaded, ", ".join(names))
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


def condition_validator(compiler: ConditionCompiler) -> Callable[[Mapping[str, Any]], None]:
    """A save-time check for conditions: compile with ``compiler`` (and so cache), turning a
    ``ConditionError`` into the 422 ``ValidationFailed`` every adapter reports."""

    def validate(condition: Mapping[str, Any]) -> None:
        try:
            compiler.compile(condition)
        except ConditionError as exc:
            details: dict[str, Any] = {"location": list(exc.location)} if exc.location else {}
            code = exc.code
            if code not in ERROR_CODES:
                # A plugin operator's own code: reported under a registered one, so every
                # code a client sees stays documented; the plugin's is kept in details.
                details["operator_code"] = code
                code = "invalid_operator_argument"
            raise ValidationFailed(exc.message, code=code, details=details or None) from exc

    return validate
