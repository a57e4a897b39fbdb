"""The plugin interface: pluggy hook specifications, every hook prefixed ``assay_``.

A plugin is any object or module with functions marked ``@hookimpl``, registered through
the ``assay.plugins`` entry-point group (built-ins in ``assay.plugins`` are registered the
same way). The engine calls these hooks when it compiles a configuration snapshot, never
per decision: a hook returns objects (operators, metric kinds, ...) that compiled rules
then call directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from assay.engine._core._conditions import OperatorFactory

PROJECT_NAME = "assay"
ENTRY_POINT_GROUP = "assay.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def assay_targeting_operators() -> Mapping[str, OperatorFactory]:  # type: ignore[empty-body]
    """Return targeting operators by name (each name starts with ``$``).

    An operator factory is called once per distinct condition at snapshot compile time
    with the operator's argument and a compile context, and returns a predicate over the
    attribute's value. It should raise ``ConditionError`` for an argument it cannot accept,
    so the rule is refused when it is saved. Later plugins override earlier ones for the
    same name; built-ins are registered first.
    """
