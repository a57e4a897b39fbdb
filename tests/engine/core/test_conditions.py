"""The condition compiler: compile-time refusal, caching, pluggable operators, RE2 safety,
and the JavaScript coercions GrowthBook's semantics depend on beyond the conformance file."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import pytest

from assay.engine._core._conditions import (
    MISSING,
    CompileContext,
    ConditionCompiler,
    ConditionError,
    ValuePredicate,
    compile_condition,
    js_number,
    js_string,
    json_equal,
)
from assay.plugins._growthbook_operators import GROWTHBOOK_OPERATORS, padded_version_string

OPS = GROWTHBOOK_OPERATORS


def check(condition: dict[str, Any], attributes: dict[str, Any]) -> bool:
    return compile_condition(condition, OPS)(attributes)


# --------------------------------------------------------------------------------------
# Compile-time errors
# --------------------------------------------------------------------------------------


def test_unknown_operator_is_refused_at_compile_time_with_its_location() -> None:
    with pytest.raises(ConditionError) as excinfo:
        compile_condition({"$and": [{"age": {"$gt": 1, "$bogus": 2}}]}, OPS)
    error = excinfo.value
    assert error.code == "unknown_operator"
    assert error.location == ("$and", 0, "age", "$bogus")
    assert "$bogus" in str(error)
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    "condition",
    [
        {"tags": {"$elemMatch": {"$nope": 1}}},
        {"tags": {"$not": {"$nope": 1}}},
        {"tags": {"$size": {"$nope": 1}}},
        {"tags": {"$all": [{"$nope": 1}]}},
        {"$not": {"a": {"$nope": 1}}},
        {"$nor": [{"a": 1}, {"b": {"$nope": 1}}]},
    ],
    ids=["elemMatch", "not", "size", "all", "top-level not", "nor"],
)
def test_nested_unknown_operators_are_refused_at_compile_time(condition: dict[str, Any]) -> None:
    with pytest.raises(ConditionError) as excinfo:
        compile_condition(condition, OPS)
    assert excinfo.value.code == "unknown_operator"
    assert excinfo.value.location is not None
    assert excinfo.value.location[-1] == "$nope"


@pytest.mark.parametrize(
    "condition", [[], "country = FR", 3, True, {"$and": {"a": 1}}, {"$or": "x"}]
)
def test_malformed_conditions_are_invalid(condition: Any) -> None:
    with pytest.raises(ConditionError) as excinfo:
        compile_condition(condition, OPS)
    assert excinfo.value.code == "invalid_condition"
    # Structure is refused in tolerant mode too: there is nothing sensible to evaluate.
    with pytest.raises(ConditionError):
        compile_condition(condition, OPS, strict=False)


@pytest.mark.parametrize(
    ("condition", "code"),
    [
        ({"a": {"$in": "FR"}}, "invalid_operator_argument"),
        ({"a": {"$nin": {"x": 1}}}, "invalid_operator_argument"),
        ({"a": {"$all": "x"}}, "invalid_operator_argument"),
        ({"a": {"$type": "date"}}, "invalid_operator_argument"),
        ({"a": {"$type": ["string"]}}, "invalid_operator_argument"),
        ({"a": {"$eq": [1, 2]}}, "invalid_operator_argument"),
        ({"a": {"$elemMatch": 3}}, "invalid_operator_argument"),
        ({"a": {"$regex": 5}}, "invalid_operator_argument"),
        ({"a": {"$inGroup": 7}}, "invalid_operator_argument"),
        ({"a": {"$regex": "[unclosed"}}, "invalid_regex"),
        ({"a": {"$regexi": "/???***[)"}}, "invalid_regex"),
        ({"a": {"$regex": r"(a)\1"}}, "unsafe_regex"),
        ({"a": {"$notRegex": r"foo(?=bar)"}}, "unsafe_regex"),
        ({"a": {"$regex": r"(?<!x)y"}}, "unsafe_regex"),
    ],
)
def test_bad_arguments_are_refused_in_strict_mode_and_false_in_tolerant_mode(
    condition: dict[str, Any], code: str
) -> None:
    with pytest.raises(ConditionError) as excinfo:
        compile_condition(condition, OPS)
    assert excinfo.value.code == code
    assert excinfo.value.location is not None
    assert excinfo.value.location[0] == "a"
    tolerant = compile_condition(condition, OPS, strict=False)
    for value in ["", "FR", "aa", "foobar", 1, [1], None, MISSING]:
        assert tolerant({"a": value}) is False


@pytest.mark.parametrize(
    ("condition", "attributes", "expected"),
    [
        # JavaScript's !== between two distinct objects is always true.
        ({"a": {"$ne": {"x": 1}}}, {"a": {"x": 1}}, True),
        # [1] > "FR"? ToPrimitive([1]) is "1", and two strings compare as strings.
        ({"a": {"$gt": [1]}}, {"a": "FR"}, True),
        ({"a": {"$gt": [1]}}, {"a": "0"}, False),
        # paddedVersionString(null) is "0".
        ({"a": {"$vgt": None}}, {"a": "0.0.1"}, True),
    ],
)
def test_tolerant_mode_evaluates_odd_arguments_like_javascript(
    condition: dict[str, Any], attributes: dict[str, Any], expected: bool
) -> None:
    with pytest.raises(ConditionError) as excinfo:
        compile_condition(condition, OPS)
    assert excinfo.value.code == "invalid_operator_argument"
    assert compile_condition(condition, OPS, strict=False)(attributes) is expected


def test_backreference_error_names_the_pattern() -> None:
    with pytest.raises(ConditionError) as excinfo:
        compile_condition({"name": {"$regex": r"(a)\1"}}, OPS)
    assert excinfo.value.code == "unsafe_regex"
    assert r"(a)\1" in str(excinfo.value)


def test_regex_errors_come_from_compilation_not_evaluation() -> None:
    # Compiling must raise even though no attributes were ever evaluated.
    with pytest.raises(ConditionError):
        compile_condition({"$or": [{"x": 1}, {"y": {"$regex": "("}}]}, OPS)


# --------------------------------------------------------------------------------------
# RE2: linear-time matching
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"^(a|a)*$", r"(a*)*b", r"^(\w+\s?)*$"])
def test_catastrophic_patterns_evaluate_correctly_on_adversarial_input(pattern: str) -> None:
    # These patterns take exponential time in a backtracking engine on a long run of "a"s
    # with a mismatching tail; RE2 answers in linear time. Correctness is asserted, not time.
    predicate = compile_condition({"ua": {"$regex": pattern}}, OPS)
    adversarial = "a" * 50_000 + "!"
    expected = {r"(a+)+$": False, r"^(a|a)*$": False, r"(a*)*b": False, r"^(\w+\s?)*$": False}
    assert predicate({"ua": adversarial}) is expected[pattern]
    assert predicate({"ua": "a" * 50_000 + ("b" if pattern == r"(a*)*b" else "")}) is True


def test_regex_semantics_follow_javascript() -> None:
    assert check({"v": {"$regex": "^abc$"}}, {"v": "abc"})
    assert not check({"v": {"$regex": "^abc$"}}, {"v": "abc\n"})  # $ is end of input, as in JS
    assert check({"v": {"$regex": r"\u00e9t\u00e9"}}, {"v": "un été"})  # JS \uXXXX escapes
    assert check({"v": {"$regex": r"a\/b"}}, {"v": "a/b"})
    assert check({"v": {"$regex": "(?<year>\\d{4})-12"}}, {"v": "1980-12-25"})
    assert check({"v": {"$regexi": "ZÜRICH"}}, {"v": "zürich"})
    assert check({"v": {"$regex": "^12"}}, {"v": 123})  # test() stringifies numbers
    assert check({"v": {"$regex": "^null$"}}, {})  # ... and the null of an absent path
    assert check({"v": {"$notRegex": "x"}}, {"v": "abc"})
    assert check({"v": {"$regex": "^a.b$"}}, {"v": "a\ud800b"})  # lone surrogate: one unit


# --------------------------------------------------------------------------------------
# Caching by content
# --------------------------------------------------------------------------------------


def test_compiler_returns_the_same_predicate_for_equal_conditions() -> None:
    compiler = ConditionCompiler(OPS)
    first = compiler.compile({"country": {"$in": ["FR", "DE"]}, "age": {"$gte": 18}})
    second = compiler.compile({"age": {"$gte": 18}, "country": {"$in": ["FR", "DE"]}})
    third = compiler.compile({"country": {"$in": ["FR", "DE"]}, "age": {"$gte": 21}})
    assert first is second
    assert third is not first
    assert len(compiler) == 2
    assert first({"country": "FR", "age": 30})
    assert not third({"country": "FR", "age": 20})


def test_compiler_compiles_each_distinct_condition_once() -> None:
    calls: list[Any] = []

    def counting(argument: Any, ctx: CompileContext) -> ValuePredicate:
        calls.append(argument)
        return lambda value: value == argument

    compiler = ConditionCompiler({**OPS, "$is": counting})
    predicates = [compiler.compile({"plan": {"$is": "pro"}}) for _ in range(5)]
    assert len(calls) == 1
    assert all(p is predicates[0] for p in predicates)
    for _ in range(3):
        assert predicates[0]({"plan": "pro"})
    assert len(calls) == 1  # evaluation never calls the factory


def test_compiler_cache_is_bounded() -> None:
    compiler = ConditionCompiler(OPS, max_entries=3)
    predicates = [compiler.compile({"n": i}) for i in range(5)]
    assert len(compiler) == 3
    assert compiler.compile({"n": 4}) is predicates[4]
    assert compiler.compile({"n": 0}) is not predicates[0]  # evicted, compiled again
    compiler.clear()
    assert len(compiler) == 0


def test_compiler_does_not_cache_failures_and_none_is_always_true() -> None:
    compiler = ConditionCompiler(OPS)
    with pytest.raises(ConditionError):
        compiler.compile({"a": {"$nope": 1}})
    assert len(compiler) == 0
    assert compiler.compile(None)({}) is True
    assert compiler.compile({})({"x": 1}) is True


def test_compiler_refuses_non_json_conditions() -> None:
    with pytest.raises(ConditionError) as excinfo:
        ConditionCompiler(OPS).compile({"a": {1, 2}})
    assert excinfo.value.code == "invalid_condition"


def test_compiler_snapshots_its_operator_table() -> None:
    table = dict(OPS)
    compiler = ConditionCompiler(table)
    table.pop("$gt")
    assert compiler.compile({"a": {"$gt": 1}})({"a": 2})


# --------------------------------------------------------------------------------------
# Pluggable operators
# --------------------------------------------------------------------------------------


def _starts_with(argument: Any, ctx: CompileContext) -> ValuePredicate:
    if not isinstance(argument, str):
        raise ctx.error("invalid_operator_argument", "$startsWith takes a string")
    prefix = argument
    return lambda value: isinstance(value, str) and value.startswith(prefix)


def test_custom_operator_works_alongside_builtins() -> None:
    operators = {**OPS, "$startsWith": _starts_with}
    predicate = compile_condition(
        {"email": {"$startsWith": "admin@"}, "$or": [{"age": {"$gte": 18}}, {"vip": True}]},
        operators,
    )
    assert predicate({"email": "admin@example.com", "age": 30})
    assert predicate({"email": "admin@example.com", "age": 3, "vip": True})
    assert not predicate({"email": "user@example.com", "age": 30})
    assert not predicate({"age": 30})
    # Built-ins compose with it, e.g. under $not and $elemMatch.
    nested = compile_condition(
        {"emails": {"$elemMatch": {"$not": {"$startsWith": "noreply"}}}}, operators
    )
    assert nested({"emails": ["noreply@x", "ceo@x"]})
    assert not nested({"emails": ["noreply@x"]})


def test_custom_operator_errors_are_located_and_tolerated() -> None:
    operators = {**OPS, "$startsWith": _starts_with}
    with pytest.raises(ConditionError) as excinfo:
        compile_condition({"email": {"$startsWith": 3}}, operators)
    assert excinfo.value.code == "invalid_operator_argument"
    assert excinfo.value.location == ("email", "$startsWith")
    assert compile_condition({"email": {"$startsWith": 3}}, operators, strict=False)({}) is False


def test_plain_exceptions_from_a_factory_become_condition_errors() -> None:
    def picky(argument: Any, ctx: CompileContext) -> ValuePredicate:
        raise TypeError("wants an int")

    with pytest.raises(ConditionError) as excinfo:
        compile_condition({"a": {"$picky": "x"}}, {"$picky": picky})
    assert excinfo.value.code == "invalid_operator_argument"
    assert "wants an int" in excinfo.value.message


def test_custom_operator_can_override_a_builtin() -> None:
    def numeric_eq(argument: Any, ctx: CompileContext) -> ValuePredicate:
        return lambda value: js_number(value) == argument

    operators = {**OPS, "$eq": numeric_eq}
    assert compile_condition({"n": {"$eq": 5}}, operators)({"n": "5"})
    assert not compile_condition({"n": {"$eq": 5}}, OPS)({"n": "5"})


def test_custom_operators_see_missing_distinct_from_null() -> None:
    seen: list[Any] = []

    def spy(argument: Any, ctx: CompileContext) -> ValuePredicate:
        def record(value: Any) -> bool:
            seen.append(value)
            return True

        return record

    predicate = compile_condition({"a.b": {"$spy": 1}}, {"$spy": spy})
    predicate({})
    predicate({"a": {"b": None}})
    predicate({"a": 5})
    assert seen[0] is MISSING
    assert seen[1] is None
    assert seen[2] is MISSING


def test_saved_groups_come_from_the_context() -> None:
    groups = {"beta": ["u1", "u2"]}
    assert compile_condition({"id": {"$inGroup": "beta"}}, OPS, saved_groups=groups)({"id": "u2"})
    assert not compile_condition({"id": {"$inGroup": "beta"}}, OPS)({"id": "u2"})
    compiler = ConditionCompiler(OPS, saved_groups=groups)
    assert compiler.compile({"id": {"$notInGroup": "beta"}})({"id": "u3"})


# --------------------------------------------------------------------------------------
# GrowthBook semantics beyond the conformance file (expectations checked against the
# JavaScript SDK's rules: String(), Number(), ===, JSON.stringify, getPath)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "attributes", "expected"),
    [
        # implicit equality coerces like `value + "" === condition` / `value * 1 === condition`
        ({"n": "8"}, {"n": 8}, True),
        ({"n": 8}, {"n": "8"}, True),
        ({"n": 8}, {"n": " 8 "}, True),
        ({"n": 1}, {"n": True}, True),
        ({"n": 0}, {}, True),  # Number(null) === 0
        ({"n": "null"}, {}, True),  # String(null) === "null"
        ({"n": "1,2"}, {"n": [1, 2]}, True),
        ({"b": True}, {"b": "yes"}, True),
        ({"b": True}, {"b": []}, True),  # arrays are truthy in JavaScript
        ({"b": False}, {"b": 0}, True),
        ({"b": False}, {"b": None}, False),
        # $eq / $in are strict (===, includes): no coercion, and true is not 1
        ({"n": {"$eq": 8}}, {"n": "8"}, False),
        ({"n": {"$eq": 1}}, {"n": True}, False),
        ({"n": {"$eq": 1}}, {"n": 1.0}, True),
        ({"n": {"$eq": None}}, {}, True),
        ({"n": {"$in": [1, 2]}}, {"n": True}, False),
        ({"n": {"$in": [True]}}, {"n": 1}, False),
        ({"n": {"$in": [None]}}, {}, True),
        ({"n": {"$in": [[1]]}}, {"n": [[1]]}, False),  # nested arrays compare by identity
        ({"n": {"$ini": ["ZÜRICH", 3]}}, {"n": "zürich"}, True),
        ({"n": {"$ini": ["a", 3]}}, {"n": 3}, True),
        # relational operators: strings compare as strings, anything else as numbers
        ({"n": {"$lt": "10"}}, {"n": "9"}, False),
        ({"n": {"$lt": 10}}, {"n": "9"}, True),
        ({"n": {"$gt": -1}}, {"n": []}, True),  # [] -> "" -> 0
        ({"n": {"$gt": 0}}, {"n": "abc"}, False),  # NaN compares false
        ({"n": {"$lte": 0}}, {"n": "abc"}, False),
        ({"n": {"$gte": 0}}, {"n": None}, True),
        ({"n": {"$lt": "\uffff"}}, {"n": "\U0001f600"}, True),  # UTF-16 code-unit order
        ({"n": {"$gt": "Z"}}, {"n": "a"}, True),
        # JSON equality: types must match, 1 equals 1.0, object key order does not matter
        ({"o": {"a": 1, "b": [1, "x"]}}, {"o": {"b": [1.0, "x"], "a": 1}}, True),
        ({"o": {"a": 1}}, {"o": {"a": True}}, False),
        ({"o": {"a": 1}}, {"o": {"a": "1"}}, False),
        ({"o": [None]}, {"o": [math.nan]}, True),  # JSON.stringify(NaN) is "null"
        ({"o": {}}, {"o": {}}, True),
        # paths: nested objects, array indices and length, nothing inside strings
        ({"a.b.c": 1}, {"a": {"b": {"c": 1}}}, True),
        ({"tags.0": "x"}, {"tags": ["x", "y"]}, True),
        ({"tags.1.k": 2}, {"tags": [{}, {"k": 2}]}, True),
        ({"tags.01": "y"}, {"tags": ["x", "y"]}, False),
        ({"tags.length": 2}, {"tags": ["x", "y"]}, True),
        ({"s.length": {"$exists": True}}, {"s": "abc"}, False),
        ({"a.b": {"$exists": False}}, {"a": {"b": None}}, True),  # null does not "exist"
        # logical operators
        ({"$nor": []}, {}, False),  # GrowthBook: evalOr([]) is true, so $nor([]) fails
        ({"$or": [], "$and": []}, {}, True),
        ({"$not": {}}, {}, False),
        # $elemMatch skips falsy elements, and $all/$size on non-arrays are false
        ({"xs": {"$elemMatch": {"$eq": 0}}}, {"xs": [0, 1]}, False),
        ({"xs": {"$elemMatch": {"$gt": 0}}}, {"xs": [0, 1]}, True),
        ({"xs": {"$elemMatch": {}}}, {"xs": [0, {}]}, True),
        ({"xs": {"$all": []}}, {"xs": []}, True),
        ({"xs": {"$all": [{"$gt": 5}, "a"]}}, {"xs": ["a", 6]}, True),
        ({"xs": {"$alli": ["A", "b"]}}, {"xs": ["a", "B"]}, True),
        ({"xs": {"$size": {"$lt": 2}}}, {"xs": "a"}, False),
        # $type
        ({"x": {"$type": "null"}}, {}, True),
        ({"x": {"$type": "number"}}, {"x": True}, False),
        ({"x": {"$type": "boolean"}}, {"x": True}, True),
        ({"x": {"$type": "array"}}, {"x": (1, 2)}, True),
        # versions
        ({"v": {"$vgt": 1}}, {"v": "1.0.1"}, True),
        ({"v": {"$veq": "1.2.3"}}, {"v": "v1.2.3+a\nb"}, False),  # "+" before a newline stays
        ({"v": {"$vlt": "1.0.0"}}, {}, True),  # absent is "0"
    ],
)
def test_growthbook_semantics(
    condition: dict[str, Any], attributes: dict[str, Any], expected: bool
) -> None:
    assert check(condition, attributes) is expected


def test_non_dict_attribute_mappings_work() -> None:
    from types import MappingProxyType

    predicate = compile_condition({"a": 1, "b.c": {"$gt": 1}}, OPS)
    assert predicate(MappingProxyType({"a": 1, "b": MappingProxyType({"c": 2})}))


def test_empty_and_none_conditions_always_hold() -> None:
    assert compile_condition(None, OPS)({}) is True
    assert compile_condition({}, OPS)({"x": 1}) is True


@pytest.mark.parametrize(
    ("value", "expected"),
    # Expected strings are what Node prints for String(value).
    [
        (1e21, "1e+21"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (0.1, "0.1"),
        (-0.0, "0"),
        (100.0, "100"),
        (2.0**60, "1152921504606847000"),
        (123456789012345678901, "123456789012345680000"),
        (9007199254740993, "9007199254740992"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (math.inf, "Infinity"),
        (math.nan, "NaN"),
        (True, "true"),
        (None, "null"),
        (MISSING, "null"),
        ([1, None, [2, 3]], "1,,2,3"),
        ({"a": 1}, "[object Object]"),
    ],
)
def test_js_string(value: Any, expected: str) -> None:
    assert js_string(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    # Expected numbers are what Node prints for Number(value).
    [
        (" 12 ", 12.0),
        ("\u00a012\u00a0", 12.0),
        ("0x1F", 31.0),
        ("0b101", 5.0),
        ("-0x10", math.nan),
        ("1_0", math.nan),
        ("inf", math.nan),
        ("Infinity", math.inf),
        ("+.5e1", 5.0),
        ("", 0.0),
        ("\u0663", math.nan),  # non-ASCII digits are not numbers in JavaScript
        ([5], 5.0),
        ([1, 2], math.nan),
        ([], 0.0),
        ({}, math.nan),
        (None, 0.0),
        (True, 1.0),
        (10**400, math.inf),
    ],
)
def test_js_number(value: Any, expected: float) -> None:
    result = js_number(value)
    if math.isnan(expected):
        assert math.isnan(result)
    else:
        assert result == expected


def test_json_equal_distinguishes_types() -> None:
    assert json_equal([1, {"a": None}], [1.0, {"a": None}])
    assert not json_equal([1], [True])
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})
    assert json_equal(MISSING, None)


@pytest.mark.parametrize(
    ("version", "padded"),
    [
        ("1.2.3", "    1-    2-    3-~"),
        ("v1.2.3+build.7", "    1-    2-    3-~"),
        ("1.0.0-beta.11", "    1-    0-    0-beta-   11"),
        ("1-2-3", "    1-    2-    3-~"),
        (10, "   10"),
        (None, "    0"),
        ("", "    0"),
        (True, "    0"),
    ],
)
def test_padded_version_string(version: Any, padded: str) -> None:
    assert padded_version_string(version) == padded


# --------------------------------------------------------------------------------------
# House rule: the core is pure
# --------------------------------------------------------------------------------------

CORE = Path(__file__).resolve().parents[3] / "src" / "assay" / "engine" / "_core"
FORBIDDEN = {
    "trio",
    "asyncpg",
    "quart",
    "quart_trio",
    "hypercorn",
    "httpx",
    "trio_asyncio",
    "socket",
}


@pytest.mark.parametrize("module", ["_bucketing.py", "_conditions.py"])
def test_assignment_core_imports_no_io_library(module: str) -> None:
    tree = ast.parse((CORE / module).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
    assert "assay" not in imported or all(
        not isinstance(n, ast.ImportFrom) or not (n.module or "").startswith("assay.plugins")
        for n in ast.walk(tree)
    )
