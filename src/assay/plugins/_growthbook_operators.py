"""GrowthBook's targeting operators, as operator factories for the condition compiler.

Each factory validates its argument once, when a rule is compiled, and returns a small
closure that the compiled rule calls on every decision. The behaviour, including
JavaScript's coercions, follows GrowthBook's reference SDK so imported conditions target
the same subjects; where an argument can never be meaningful (``$in`` without a list, a
regex that does not compile) the factory refuses it with a ``ConditionError`` in strict
mode, and in tolerant mode falls back to what the SDK evaluates.

Regular expressions run on RE2, which matches in linear time: a targeting rule cannot stall
the decide hot path with catastrophic backtracking. Patterns RE2 cannot run (backreferences,
lookaround) are refused as ``unsafe_regex``.
"""

from __future__ import annotations

import operator
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any, Final

import re2  # type: ignore[import-untyped, unused-ignore]

from assay.engine._core._conditions import (
    MISSING,
    CompileContext,
    OperatorFactory,
    ValuePredicate,
    describe,
    is_array,
    is_nullish,
    is_operator_object,
    js_number,
    js_string,
    js_truthy,
    js_type,
)

__all__ = ["GROWTHBOOK_OPERATORS", "padded_version_string"]

_NUMBER_TYPES: Final = (int, float)


def _never(_: Any) -> bool:
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool)


def _refuse(ctx: CompileContext, op: str, message: str) -> None:
    """Refuse an argument in strict mode; in tolerant mode the caller goes on as the SDK."""
    if ctx.strict:
        raise ctx.error("invalid_operator_argument", f"{op} {message}")


# --------------------------------------------------------------------------------------
# JavaScript comparisons.
# --------------------------------------------------------------------------------------


def _to_primitive(value: Any) -> Any:
    # JavaScript's ToPrimitive for JSON values: arrays join to strings, objects become
    # "[object Object]", and an absent path is null.
    if value is MISSING:
        return None
    if isinstance(value, (list, tuple)):
        return js_string(value)
    if isinstance(value, Mapping):
        return "[object Object]"
    return value


def _str_compare(a: str, b: str, cmp: Callable[[Any, Any], bool]) -> bool:
    # JavaScript orders strings by UTF-16 code units, Python by code points. They only
    # disagree between an astral character and one in U+E000..U+FFFF, which needs both
    # strings to be non-ASCII; then comparing big-endian UTF-16 bytes gives the JS order.
    if a.isascii() or b.isascii():
        return cmp(a, b)
    return cmp(a.encode("utf-16-be", "surrogatepass"), b.encode("utf-16-be", "surrogatepass"))


def _relational(op: str, cmp: Callable[[Any, Any], bool]) -> OperatorFactory:
    """``$gt``/``$gte``/``$lt``/``$lte``: JavaScript's abstract relational comparison.

    Two strings compare as strings; anything else compares as numbers, so ``"8" > 5`` and
    ``8 < "10"`` hold, and an absent attribute compares as 0 (it is null in the SDK).
    A NaN on either side makes every comparison false, as in JavaScript.
    """

    def factory(argument: Any, ctx: CompileContext) -> ValuePredicate:
        if not (isinstance(argument, str) or _is_number(argument)):
            _refuse(ctx, op, f"takes a number or a string, not {js_type(argument)}")
        expected = _to_primitive(argument)
        expected_number = js_number(expected)
        if isinstance(expected, str):
            expected_string = expected

            def against_string(value: Any) -> bool:
                actual = _to_primitive(value)
                if isinstance(actual, str):
                    return _str_compare(actual, expected_string, cmp)
                return cmp(js_number(actual), expected_number)

            return against_string

        def against_number(value: Any) -> bool:
            return cmp(js_number(_to_primitive(value)), expected_number)

        return against_number

    return factory


# --------------------------------------------------------------------------------------
# Strict equality and membership (JavaScript ``===`` and ``Array.prototype.includes``).
# --------------------------------------------------------------------------------------


def _strict_equal_to(expected: Any) -> ValuePredicate:
    """A predicate for ``actual === expected`` with a scalar ``expected``."""
    if isinstance(expected, str):
        expected_str = expected

        def equals_string(value: Any) -> bool:
            return isinstance(value, str) and value == expected_str

        return describe(equals_string, "str_eq", expected_str)
    if isinstance(expected, bool):
        expected_bool = expected

        def equals_bool(value: Any) -> bool:
            return isinstance(value, bool) and value is expected_bool

        return describe(equals_bool, "is", expected_bool)
    if _is_number(expected):
        expected_number = js_number(expected)

        def equals_number(value: Any) -> bool:
            return _is_number(value) and js_number(value) == expected_number

        return equals_number
    if is_nullish(expected):
        return is_nullish
    # Arrays and objects are compared by identity in JavaScript, and a rule's literal is
    # never the same object as an attribute: === is always false.
    return _never


class _Membership:
    """``expected.includes(actual)`` (SameValueZero), optionally case-folding strings.

    The list is split by JSON type at compile time so a lookup is one set probe: Python's
    ``1 == True`` must not leak into JavaScript's strict comparison.
    """

    __slots__ = ("_bools", "_fold", "_has_nan", "_has_null", "_numbers", "_strings")

    def __init__(self, elements: Iterable[Any], *, case_insensitive: bool = False) -> None:
        self._fold = case_insensitive
        self._strings: set[str] = set()
        self._numbers: set[float] = set()
        self._bools: set[bool] = set()
        self._has_null = False
        self._has_nan = False
        for element in elements:
            if isinstance(element, str):
                self._strings.add(element.lower() if case_insensitive else element)
            elif isinstance(element, bool):
                self._bools.add(element)
            elif _is_number(element):
                number = js_number(element)
                if number != number:
                    self._has_nan = True  # SameValueZero: NaN includes NaN
                else:
                    self._numbers.add(number)
            elif is_nullish(element):
                self._has_null = True
            # Arrays and objects inside the list can never be found (identity comparison).

    def contains(self, value: Any) -> bool:
        if isinstance(value, str):
            return (value.lower() if self._fold else value) in self._strings
        if isinstance(value, bool):
            return value in self._bools
        if _is_number(value):
            number = js_number(value)
            return number in self._numbers or (number != number and self._has_nan)
        if is_nullish(value):
            return self._has_null
        return False

    @property
    def strings(self) -> set[str]:
        """The list's strings (case-folded when case-insensitive)."""
        return self._strings

    def intersects(self, value: Any) -> bool:
        """GrowthBook's ``isIn``: for an array attribute, whether any element is included."""
        if is_array(value):
            return any(self.contains(element) for element in value)
        return self.contains(value)


def _membership(op: str, *, case_insensitive: bool, negate: bool) -> OperatorFactory:
    def factory(argument: Any, ctx: CompileContext) -> ValuePredicate:
        if not is_array(argument):
            _refuse(ctx, op, f"takes a list, not {js_type(argument)}")
            return _never  # the SDK answers false for a non-list argument, even for $nin
        member = _Membership(argument, case_insensitive=case_insensitive)
        if negate:

            def not_in(value: Any) -> bool:
                return not member.intersects(value)

            return not_in
        if case_insensitive:
            return member.intersects
        strings = member.strings
        intersects = member.intersects

        def is_in(value: Any) -> bool:
            # A string attribute is by far the usual case: one set probe, no method calls.
            if type(value) is str:
                return value in strings
            return intersects(value)

        return describe(is_in, "str_in", strings)

    return factory


def _group_membership(op: str, *, negate: bool) -> OperatorFactory:
    """``$inGroup``/``$notInGroup``: membership in a saved group's values.

    The group is a list of values, or a typed ``{"type": "list", "values": [...]}`` entry
    (an assay list segment), tested on the attribute the operator is applied to, as in the
    SDK. An unknown group is an empty list, as in the SDK: it matches nobody for
    ``$inGroup`` and everybody for ``$notInGroup``. A group that is not a list (a condition
    group) matches nobody for either, as in the SDK; saving refuses both cases.
    """

    def factory(argument: Any, ctx: CompileContext) -> ValuePredicate:
        if not isinstance(argument, str):
            _refuse(ctx, op, f"takes a saved group id, not {js_type(argument)}")
        group = ctx.saved_groups.get(argument, ()) if isinstance(argument, str) else None
        if isinstance(group, Mapping) and group.get("type") == "list":
            group = group.get("values")
        if not isinstance(group, (list, tuple)):
            return _never
        member = _Membership(group)
        if negate:

            def not_in_group(value: Any) -> bool:
                return not member.intersects(value)

            return not_in_group
        return member.intersects

    return factory


def _eq(argument: Any, ctx: CompileContext) -> ValuePredicate:
    if is_array(argument) or isinstance(argument, Mapping):
        _refuse(ctx, "$eq", "compares by identity and never matches a list or an object")
    return _strict_equal_to(argument)


def _ne(argument: Any, ctx: CompileContext) -> ValuePredicate:
    if is_array(argument) or isinstance(argument, Mapping):
        _refuse(ctx, "$ne", "compares by identity and always matches a list or an object")
    equal = _strict_equal_to(argument)

    def not_equal(value: Any) -> bool:
        return not equal(value)

    return not_equal


# --------------------------------------------------------------------------------------
# Structural operators.
# --------------------------------------------------------------------------------------


def _exists(argument: Any, ctx: CompileContext) -> ValuePredicate:
    # The SDK tests the argument's truthiness and uses loose null checks (== null).
    if js_truthy(argument):
        return lambda value: not is_nullish(value)
    return is_nullish


_JS_TYPES: Final = frozenset({"string", "number", "boolean", "object", "array", "null"})


def _type(argument: Any, ctx: CompileContext) -> ValuePredicate:
    if not isinstance(argument, str) or argument not in _JS_TYPES:
        _refuse(ctx, "$type", f"takes one of {sorted(_JS_TYPES)}, not {argument!r}")
    expected: object = argument

    def has_type(value: Any) -> bool:
        return js_type(value) == expected

    return has_type


def _not(argument: Any, ctx: CompileContext) -> ValuePredicate:
    inner = ctx.compile_value_condition(argument)

    def negated(value: Any) -> bool:
        return not inner(value)

    return negated


def _size(argument: Any, ctx: CompileContext) -> ValuePredicate:
    inner = ctx.compile_value_condition(argument)

    def size_matches(value: Any) -> bool:
        return is_array(value) and inner(len(value))

    return size_matches


def _elem_match(argument: Any, ctx: CompileContext) -> ValuePredicate:
    # An operator object applies to each element itself ({"$gt": 10}); anything else is a
    # condition on each element as an object ({"name": {"$regex": "^ping"}}).
    inner: Callable[[Any], bool]
    if is_operator_object(argument):
        inner = ctx.compile_value_condition(argument)
    elif isinstance(argument, Mapping):
        inner = ctx.compile_condition(argument)
    else:
        _refuse(ctx, "$elemMatch", f"takes an object, not {js_type(argument)}")
        return _never

    def some_element(value: Any) -> bool:
        if not is_array(value):
            return False
        # The SDK skips falsy elements (0, "", false, null) before testing them.
        return any(js_truthy(element) and inner(element) for element in value)

    return some_element


def _all(op: str, *, case_insensitive: bool) -> OperatorFactory:
    def factory(argument: Any, ctx: CompileContext) -> ValuePredicate:
        if not is_array(argument):
            _refuse(ctx, op, f"takes a list, not {js_type(argument)}")
            return _never
        # Each item is a full value condition, e.g. {"$all": [{"$gt": 5}, "x"]}.
        items = tuple(
            ctx.compile_value_condition(item, case_insensitive=case_insensitive, at=index)
            for index, item in enumerate(argument)
        )

        def contains_all(value: Any) -> bool:
            if not is_array(value):
                return False
            return all(any(match(element) for element in value) for match in items)

        return contains_all

    return factory


# --------------------------------------------------------------------------------------
# Regular expressions on RE2.
# --------------------------------------------------------------------------------------

# RE2's default memory budget; a pattern needing more (huge counted repetitions) is refused
# at compile time instead of being approximated.
_RE2_MAX_MEM: Final = 8 << 20
_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _translate_js_pattern(pattern: str) -> str:
    """Rewrite the JavaScript-only escape ``\\uXXXX`` into RE2's ``\\x{XXXX}``.

    The rest of the ECMAScript syntax GrowthBook users write (classes, anchors, groups,
    named groups, ``\\d\\w\\s\\b``, escaped ``/``) means the same in RE2.
    """
    if "\\u" not in pattern:
        return pattern
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            if pattern[i + 1] == "u" and i + 6 <= n and _HEX.issuperset(pattern[i + 2 : i + 6]):
                out.append("\\x{" + pattern[i + 2 : i + 6] + "}")
                i += 6
            else:
                out.append(pattern[i : i + 2])  # keep escapes whole so "\\\\u" stays literal
                i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _compile_regex(
    op: str, pattern: str, case_insensitive: bool, ctx: CompileContext
) -> Callable[[str], Any]:
    """Compile ``pattern`` for RE2 and return a function: text -> truthy iff it matches."""
    options = re2.Options()
    options.log_errors = False  # errors are reported through ConditionError, not stderr
    options.case_sensitive = not case_insensitive
    options.max_mem = _RE2_MAX_MEM
    translated = _translate_js_pattern(pattern)
    try:
        re2.compile(translated, options)  # parses with a precise error message
        # Matching goes through a one-pattern RE2::Set: it answers "is there a match" without
        # building match objects, several times faster than the re-compatible search().
        matcher = re2.Set.SearchSet(options)
        matcher.Add(translated)
        matcher.Compile()
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        # Tell "not a regex at all" from "a regex only a backtracking engine can run"
        # (backreferences, lookaround, huge repetitions): Python's own engine accepts the
        # latter, so it is the arbiter. It only parses here; nothing is ever matched with it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError):
                code, what = "invalid_regex", "is not a valid regular expression"
            else:
                code, what = "unsafe_regex", "needs backtracking, which targeting does not allow"
        raise ctx.error(code, f"{op} pattern /{pattern}/ {what} ({reason})") from exc
    match: Callable[[str], Any] = matcher.Match  # a list of pattern indices, or None
    return match


def _scrub_surrogates(text: str) -> str:
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def _regex(op: str, *, case_insensitive: bool, negate: bool) -> OperatorFactory:
    def factory(argument: Any, ctx: CompileContext) -> ValuePredicate:
        if not isinstance(argument, str):
            _refuse(ctx, op, f"takes a pattern string, not {js_type(argument)}")
        # RegExp.prototype.test stringifies its input, so 123 is tested as "123" and an
        # absent attribute as "null"; the SDK does the same with the pattern.
        search = _compile_regex(op, js_string(argument), case_insensitive, ctx)

        def matches(value: Any) -> bool:
            text = value if type(value) is str else js_string(value)
            try:
                return search(text) is not None
            except UnicodeEncodeError:
                # RE2 matches UTF-8, which cannot carry a lone surrogate (JSON can); such
                # a unit can only ever match "anything", so U+FFFD stands in for it.
                return search(_scrub_surrogates(text)) is not None

        if negate:

            def does_not_match(value: Any) -> bool:
                return not matches(value)

            return does_not_match
        return matches

    return factory


# --------------------------------------------------------------------------------------
# Versions.
# --------------------------------------------------------------------------------------

_LINE_TERMINATORS: Final = ("\n", "\r", "\u2028", "\u2029")


def padded_version_string(value: Any) -> str:
    """A string that orders versions correctly under plain string comparison.

    GrowthBook's algorithm: drop a leading ``v`` and ``+build`` metadata, split on ``.`` and
    ``-``, append ``~`` (which sorts after any pre-release tag) to a bare ``x.y.z``, and
    left-pad numeric parts to width 5 so ``" 9" < "10"``. Numbers are stringified; anything
    else that is not a non-empty string counts as ``"0"``.
    """
    if _is_number(value):
        value = js_string(value)
    if not isinstance(value, str) or not value:
        value = "0"
    return _pad_version(value)


@lru_cache(maxsize=4096)
def _pad_version(value: str) -> str:
    # Cached: a version attribute takes few distinct values (the app versions in the
    # field), and padding costs a split and a join on every decision otherwise.
    if value.startswith("v"):
        value = value[1:]
    plus = value.find("+")
    if plus >= 0:
        # The SDK strips /\+.*$/: from the first "+" not followed by a line terminator
        # ("." does not match one), which almost always is simply the first "+".
        last_terminator = max(value.rfind(t) for t in _LINE_TERMINATORS)
        if last_terminator > plus:
            plus = value.find("+", last_terminator + 1)
        if plus >= 0:
            value = value[:plus]
    parts = value.replace("-", ".").split(".")
    if len(parts) == 3:
        parts.append("~")
    return "-".join(part.rjust(5) if part.isascii() and part.isdigit() else part for part in parts)


_COMPARISONS: Final[dict[Callable[[Any, Any], bool], str]] = {
    operator.lt: "<",
    operator.le: "<=",
    operator.eq: "==",
    operator.ne: "!=",
    operator.gt: ">",
    operator.ge: ">=",
}


def _version(op: str, cmp: Callable[[Any, Any], bool]) -> OperatorFactory:
    def factory(argument: Any, ctx: CompileContext) -> ValuePredicate:
        if not (isinstance(argument, str) or _is_number(argument)):
            _refuse(ctx, op, f"takes a version string, not {js_type(argument)}")
        expected = padded_version_string(argument)
        if not expected.isascii():

            def compare(value: Any) -> bool:
                return _str_compare(padded_version_string(value), expected, cmp)

            return compare

        def compare_ascii(value: Any) -> bool:
            # Against an ASCII version, code units and code points order alike (see
            # _str_compare), and a non-empty string attribute is padded as it is.
            if type(value) is str and value:
                return cmp(_pad_version(value), expected)
            return cmp(padded_version_string(value), expected)

        return describe(compare_ascii, "str_cmp", _pad_version, expected, _COMPARISONS[cmp])

    return factory


GROWTHBOOK_OPERATORS: dict[str, OperatorFactory] = {
    "$eq": _eq,
    "$ne": _ne,
    "$gt": _relational("$gt", operator.gt),
    "$gte": _relational("$gte", operator.ge),
    "$lt": _relational("$lt", operator.lt),
    "$lte": _relational("$lte", operator.le),
    "$in": _membership("$in", case_insensitive=False, negate=False),
    "$nin": _membership("$nin", case_insensitive=False, negate=True),
    "$ini": _membership("$ini", case_insensitive=True, negate=False),
    "$nini": _membership("$nini", case_insensitive=True, negate=True),
    "$all": _all("$all", case_insensitive=False),
    "$alli": _all("$alli", case_insensitive=True),
    "$inGroup": _group_membership("$inGroup", negate=False),
    "$notInGroup": _group_membership("$notInGroup", negate=True),
    "$size": _size,
    "$elemMatch": _elem_match,
    "$exists": _exists,
    "$type": _type,
    "$not": _not,
    "$regex": _regex("$regex", case_insensitive=False, negate=False),
    "$regexi": _regex("$regexi", case_insensitive=True, negate=False),
    "$notRegex": _regex("$notRegex", case_insensitive=False, negate=True),
    "$notRegexi": _regex("$notRegexi", case_insensitive=True, negate=True),
    "$veq": _version("$veq", operator.eq),
    "$vne": _version("$vne", operator.ne),
    "$vgt": _version("$vgt", operator.gt),
    "$vgte": _version("$vgte", operator.ge),
    "$vlt": _version("$vlt", operator.lt),
    "$vlte": _version("$vlte", operator.le),
}
"""Every operator of GrowthBook's condition language, by name."""
