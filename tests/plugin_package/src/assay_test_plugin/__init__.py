"""A third-party assay plugin, as a separate package would ship one: it is registered only
through its ``assay.plugins`` entry point (see this package's pyproject.toml)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from assay.engine.hookspecs import hookimpl


def ends_with(argument: Any, context: Any) -> Callable[[Any], bool]:
    """``{"email": {"$endsWith": "@example.com"}}``: the attribute is a string ending so."""
    if not isinstance(argument, str):
        raise context.error("invalid_operator_argument", "$endsWith takes a string")
    return lambda value: isinstance(value, str) and value.endswith(argument)


@hookimpl
def assay_targeting_operators() -> Mapping[str, Callable[[Any, Any], Callable[[Any], bool]]]:
    return {"$endsWith": ends_with}
