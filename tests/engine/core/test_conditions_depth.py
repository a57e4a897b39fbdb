"""A condition nested past the interpreter's recursion limit is refused with a code,
not a crash (definitions files and Python callers do not pass the HTTP depth limit)."""

from __future__ import annotations

from typing import Any

import pytest

from assay.engine._core import ConditionCompiler
from assay.engine._core._conditions import ConditionError


@pytest.mark.parametrize("depth", [2_000, 20_000])
def test_a_condition_nested_too_deeply_is_invalid(depth: int) -> None:
    condition: Any = {"country": "DE"}
    for _ in range(depth):
        condition = {"$and": [condition]}
    with pytest.raises(ConditionError) as refused:
        ConditionCompiler({}).compile(condition)
    assert refused.value.code == "invalid_condition"


def test_a_condition_nested_moderately_compiles() -> None:
    condition: Any = {"country": "DE"}
    for _ in range(50):
        condition = {"$and": [condition]}
    assert ConditionCompiler({}).compile(condition)({"country": "DE"})
