"""Built-in targeting: GrowthBook's condition language."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from assay.engine.hookspecs import hookimpl
from assay.plugins._growthbook_operators import GROWTHBOOK_OPERATORS

if TYPE_CHECKING:
    from assay.engine._core._conditions import OperatorFactory


@hookimpl
def assay_targeting_operators() -> Mapping[str, OperatorFactory]:
    return GROWTHBOOK_OPERATORS
