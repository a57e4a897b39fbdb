"""The pure domain core: no I/O, no async, nothing but computation on immutable data."""

from assay.engine._core._bucketing import (
    choose_variation,
    fnv1a32,
    gb_hash,
    get_bucket_ranges,
    get_equal_weights,
    in_namespace,
    in_range,
)
from assay.engine._core._conditions import (
    MISSING,
    AttributesPredicate,
    CompileContext,
    ConditionCompiler,
    ConditionError,
    OperatorFactory,
    ValuePredicate,
    compile_condition,
)

__all__ = [
    "MISSING",
    "AttributesPredicate",
    "CompileContext",
    "ConditionCompiler",
    "ConditionError",
    "OperatorFactory",
    "ValuePredicate",
    "choose_variation",
    "compile_condition",
    "fnv1a32",
    "gb_hash",
    "get_bucket_ranges",
    "get_equal_weights",
    "in_namespace",
    "in_range",
]
