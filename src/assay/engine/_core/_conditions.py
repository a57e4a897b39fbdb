"""A compiler for GrowthBook's targeting-condition language.

A condition (``{"country": {"$in": ["FR", "DE"]}, "$or": [...]}``) is compiled once, when a
configuration snapshot is built, into plain Python closures; evaluating it on the decide
hot path is then a few function calls with no parsing, no dispatch on operator names and no
I/O. Operators are not built in: they come from a table of ``OperatorFactory`` objects
(GrowthBook's own set lives in ``assay.plugins._growthbook_operators``), so a plugin can add
one without touching the engine.

Semantics follow GrowthBook's reference JavaScript SDK (``evalCondition``,
``evalConditionValue``, ``getPath``, ``isOperatorObject``), including its JavaScript value
coercions, because a condition imported from GrowthBook must target exactly the same
subjects. The JS-flavoured helpers (``js_string``, ``js_number``, ...) are exported so
operator implementations can share them.

Anything invalid is refused at compile time with a ``ConditionError`` carrying a stable
machine code, so a bad rule is rejected when it is saved rather than silently never
matching. ``strict=False`` gives GrowthBook's forgiving evaluation instead (an unknown
operator or a bad operator argument evaluates to false), which the conformance cases need.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeVar, final

__all__ = [
    "MISSING",
    "AttributesPredicate",
    "CompileContext",
    "ConditionCompiler",
    "ConditionError",
    "OperatorFactory",
    "ValuePredicate",
    "compile_condition",
    "describe",
    "is_array",
    "is_nullish",
    "is_operator_object",
    "js_number",
    "js_string",
    "js_truthy",
    "js_type",
    "json_equal",
    "mentions_saved_groups",
    "shape_of",
]


@final
class _Missing:
    """Type of ``MISSING``: the value a path lookup yields when the path is absent."""

    __slots__ = ()
    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()
"""Passed to a value predicate when the attribute path does not exist.

GrowthBook's ``getPath`` returns ``null`` for an absent path, so every built-in operator
treats ``MISSING`` exactly like ``None``; it is distinct only so custom operators can tell
"absent" from "explicitly null" if they care.
"""

ValuePredicate: TypeAlias = Callable[[Any], bool]
"""Takes an attribute's value (or ``MISSING``) and says whether it satisfies the operator."""

AttributesPredicate: TypeAlias = Callable[[Mapping[str, Any]], bool]
"""Takes a subject's attributes and says whether the whole condition holds."""

OperatorFactory: TypeAlias = Callable[[Any, "CompileContext"], ValuePredicate]
"""Called once at compile time with the operator's argument; returns the predicate."""

_LOGICAL_OPERATORS: Final = frozenset({"$and", "$or", "$nor", "$not"})


class ConditionError(ValueError):
    """A condition that cannot be compiled.

    ``code`` is a stable machine-readable reason (``invalid_condition``,
    ``unknown_operator``, ``invalid_operator_argument``, ``invalid_regex``,
    ``unsafe_regex``, ...), ``message`` a human explanation and ``location`` the route to
    the offending part of the condition (keys and list indices), filled in by the compiler.
    """

    def __init__(
        self, code: str, message: str, *, location: tuple[str | int, ...] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.location = location

    def __str__(self) -> str:
        if not self.location:
            return f"{self.code}: {self.message}"
        where = "".join(f"[{p}]" if isinstance(p, int) else f"[{p!r}]" for p in self.location)
        return f"{self.code}: {self.message} (at condition{where})"


# --------------------------------------------------------------------------------------
# JavaScript value semantics. Attributes and conditions are JSON, and the reference SDK
# evaluates them with JavaScript's coercion rules; these helpers reproduce those rules for
# JSON-shaped Python values (tuples count as arrays, any Mapping as an object).
# --------------------------------------------------------------------------------------

_ARRAY_TYPES: Final = (list, tuple)
_NUMBER_TYPES: Final = (int, float)

# JavaScript's WhiteSpace and LineTerminator code points, which ``Number("...")`` trims.
# str.strip() would also drop \x1c-\x1f and \x85, which JavaScript keeps.
_JS_WHITESPACE: Final = (
    "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_DECIMAL_CHARS: Final = frozenset("0123456789+-.eE")
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_MAX_SAFE_INTEGER: Final = 2**53


def is_array(value: Any) -> bool:
    """JavaScript's ``Array.isArray`` for JSON-shaped values."""
    return isinstance(value, _ARRAY_TYPES)


def is_nullish(value: Any) -> bool:
    """``value == null`` in JavaScript: None or ``MISSING``."""
    return value is None or value is MISSING


def is_operator_object(value: Any) -> bool:
    """GrowthBook's ``isOperatorObject``: a non-empty mapping whose keys all start with ``$``."""
    if not isinstance(value, Mapping) or not value:
        return False
    return all(isinstance(k, str) and k.startswith("$") for k in value)


def js_type(value: Any) -> str:
    """GrowthBook's ``getType``: the JSON type name of a value (``MISSING`` is ``"null"``)."""
    if value is None or value is MISSING:
        return "null"
    if isinstance(value, bool):  # before numbers: bool is an int in Python, not in JS
        return "boolean"
    if isinstance(value, _NUMBER_TYPES):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, _ARRAY_TYPES):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "unknown"


def js_truthy(value: Any) -> bool:
    """JavaScript truthiness: unlike Python, empty arrays and objects are truthy."""
    if value is None or value is MISSING:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, _NUMBER_TYPES):
        return value == value and value != 0  # NaN is falsy
    if isinstance(value, str):
        return value != ""
    return True


def _js_number_to_string(x: float) -> str:
    # JavaScript's Number::toString: the shortest round-tripping digits (which Python's
    # repr also produces), laid out with JavaScript's own thresholds for exponent notation
    # (>= 1e21 or < 1e-6) rather than Python's.
    if x != x:
        return "NaN"
    if x in (math.inf, -math.inf):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"  # -0 prints as "0" too
    if x < 0:
        return "-" + _js_number_to_string(-x)
    if x.is_integer() and x <= _MAX_SAFE_INTEGER:
        return str(int(x))  # exact, and below 2**53 also the shortest digits
    _, digit_tuple, exponent = Decimal(repr(x)).as_tuple()
    assert isinstance(exponent, int)  # x is finite, so never the "n"/"F" of NaN/Infinity
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    k = len(digits)
    n = exponent + len(digit_tuple)  # x == 0.<digits> * 10**n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{mantissa}e{sign}{abs(e)}"


def js_string(value: Any) -> str:
    """JavaScript's ``String(value)``: what GrowthBook compares string conditions against."""
    if type(value) is str:
        return value
    if value is None or value is MISSING:
        # getPath yields null for an absent path, so a missing attribute reads as "null".
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
            return str(value)
        return _js_number_to_string(_int_to_float(value))
    if isinstance(value, float):
        return _js_number_to_string(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, _ARRAY_TYPES):
        # Array.prototype.join: null and undefined elements become empty strings.
        return ",".join("" if is_nullish(v) else js_string(v) for v in value)
    if isinstance(value, Mapping):
        return "[object Object]"
    return str(value)


def _int_to_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:  # JSON numbers this large parse to +-Infinity in JavaScript
        return math.inf if value > 0 else -math.inf


def _string_to_number(text: str) -> float:
    # JavaScript's StringToNumber: trimmed; empty is 0; 0x/0o/0b literals; "Infinity";
    # otherwise a decimal literal or NaN. Python's float() accepts more ("inf", "nan",
    # "1_000", non-ASCII digits), hence the character filter before calling it.
    s = text.strip(_JS_WHITESPACE)
    if not s:
        return 0.0
    if len(s) > 2 and s[0] == "0" and s[1] in "xXoObB":
        body = s[2:]
        base = {"x": 16, "o": 8, "b": 2}[s[1].lower()]
        if body.isascii() and _HEX_DIGITS.issuperset(body):
            try:
                return _int_to_float(int(body, base))
            except ValueError:
                return math.nan
        return math.nan
    if s in ("Infinity", "+Infinity"):
        return math.inf
    if s == "-Infinity":
        return -math.inf
    if not _DECIMAL_CHARS.issuperset(s):
        return math.nan
    try:
        return float(s)
    except ValueError:
        return math.nan


def js_number(value: Any) -> float:
    """JavaScript's ``Number(value)`` (``value * 1``); NaN when there is no number."""
    tp = type(value)
    if tp is float:
        return float(value)
    if tp is int:
        return _int_to_float(value)
    if value is None or value is MISSING:
        return 0.0  # Number(null) is 0, and an absent path reads as null
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int):
        return _int_to_float(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return _string_to_number(value)
    if isinstance(value, _ARRAY_TYPES):
        return _string_to_number(js_string(value))  # [] -> 0, [5] -> 5, [1, 2] -> NaN
    return math.nan


def json_equal(a: Any, b: Any) -> bool:
    """GrowthBook's ``JSON.stringify(a) === JSON.stringify(b)``, structurally.

    Types must agree (``True`` is not ``1``, ``"1"`` is not ``1``), ``1 == 1.0``, arrays
    compare in order, non-finite numbers stringify as ``null``, and ``MISSING`` is ``null``.
    One deliberate difference: object keys compare regardless of order. JavaScript compares
    them in insertion order, but conditions are stored in PostgreSQL ``jsonb``, which does
    not keep key order, so order-sensitive matching would change meaning on save.
    """
    if a is MISSING:
        a = None
    if b is MISSING:
        b = None
    if isinstance(a, float) and not math.isfinite(a):
        a = None
    if isinstance(b, float) and not math.isfinite(b):
        b = None
    ta = js_type(a)
    if ta != js_type(b):
        return False
    if ta == "array":
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if ta == "object":
        if len(a) != len(b):
            return False
        for key, av in a.items():
            if key not in b:
                return False
            if not json_equal(av, b[key]):
                return False
        return True
    if ta == "number":
        # Both sides as JavaScript doubles, so 1 == 1.0 and huge ints round as JSON would.
        return js_number(a) == js_number(b)
    return bool(a == b)


# --------------------------------------------------------------------------------------
# Compilation.
# --------------------------------------------------------------------------------------


_SHAPE: Final = "__assay_shape__"

_P = TypeVar("_P", bound=Callable[..., Any])


def describe(predicate: _P, *shape: Any) -> _P:
    """Attach to ``predicate`` the shape of what it computes, for the compiled decide path
    (``_core/_plans.py``), and return it. The closure stays the reference: the compiled
    path evaluates the shape only where it says so and calls the closure everywhere else.

    Shapes: ``("all", preds)``, ``("any", preds)``, ``("not", pred)``, ``("true",)``,
    ``("false",)``, ``("path", key, pred)`` (for a ``dict``: ``pred`` of the key's value,
    else ``MISSING``), ``("is", obj)`` (identity), and for an exact, non-subclassed ``str``
    value only: ``("str_in", set)``, ``("str_eq", text)``, ``("str_cmp", f, expected, op)``
    (non-empty strings: ``f(value) op expected``, ``op`` one of ``< <= == != > >=``). A
    predicate that describes itself must compute exactly that on those values.
    """
    setattr(predicate, _SHAPE, shape)
    return predicate


def shape_of(predicate: Callable[..., Any]) -> tuple[Any, ...] | None:
    """The shape ``describe`` attached to ``predicate``, if any."""
    shape: tuple[Any, ...] | None = getattr(predicate, _SHAPE, None)
    return shape


def _always_true(_: Any) -> bool:
    return True


def _always_false(_: Any) -> bool:
    return False


describe(_always_true, "true")
describe(_always_false, "false")


def _all_of(predicates: Sequence[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    # Specialise the small arities: most conditions have one or two clauses, and a direct
    # call chain is markedly cheaper than looping over a list.
    if not predicates:
        return _always_true
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        p0, p1 = predicates

        def both(value: Any) -> bool:
            return p0(value) and p1(value)

        return describe(both, "all", (p0, p1))
    preds = tuple(predicates)

    def every(value: Any) -> bool:
        # An explicit loop: all() over a generator costs a frame per call on the hot path.
        for p in preds:  # noqa: SIM110
            if not p(value):
                return False
        return True

    return describe(every, "all", preds)


def _any_of(predicates: Sequence[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    if not predicates:
        return _always_false
    if len(predicates) == 1:
        return predicates[0]
    preds = tuple(predicates)

    def some(value: Any) -> bool:
        for p in preds:  # noqa: SIM110 - see every() above
            if p(value):
                return True
        return False

    return describe(some, "any", preds)


def _negate(predicate: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def negated(value: Any) -> bool:
        return not predicate(value)

    return describe(negated, "not", predicate)


def _is_array_index(part: str, length: int) -> bool:
    # A JavaScript array has own properties "0".."length-1" in canonical form only.
    return (
        part.isascii() and part.isdigit() and (part == "0" or part[0] != "0") and int(part) < length
    )


def _step(current: Any, part: str) -> Any:
    # One step of getPath: ``part in current`` on a JavaScript object. Arrays are objects
    # too, exposing their indices and "length"; strings and numbers have no properties.
    if isinstance(current, Mapping):
        return current.get(part, MISSING)
    if isinstance(current, _ARRAY_TYPES):
        if part == "length":
            return len(current)
        if _is_array_index(part, len(current)):
            return current[int(part)]
    return MISSING


def _path_predicate(path: str, predicate: ValuePredicate) -> Callable[[Any], bool]:
    parts = path.split(".")
    if len(parts) == 1:
        key = path

        def single(obj: Any) -> bool:
            # dict is the common case; test it by exact type to skip the ABC machinery.
            if type(obj) is dict:
                return predicate(obj.get(key, MISSING))
            return predicate(_step(obj, key))

        return describe(single, "path", key, predicate)

    def dotted(obj: Any) -> bool:
        current = obj
        for part in parts:
            current = _step(current, part)
            if current is MISSING:
                break
        return predicate(current)

    return dotted


class CompileContext:
    """What an operator factory sees while compiling: the operator table, the mode, saved
    groups, and entry points to compile nested conditions (for ``$not``, ``$elemMatch``,
    ``$all``, ``$size``, ...)."""

    __slots__ = ("_location", "_operators", "_visited", "saved_groups", "strict")

    def __init__(
        self,
        operators: Mapping[str, OperatorFactory],
        *,
        strict: bool = True,
        saved_groups: Mapping[str, Any] | None = None,
    ) -> None:
        self._operators = operators
        self.strict = strict
        """When False, invalid operators and arguments evaluate to false instead of raising."""
        self.saved_groups: Mapping[str, Any] = (
            saved_groups if saved_groups is not None else MappingProxyType({})
        )
        """Saved groups by id, as a GrowthBook payload's ``savedGroups`` holds them (a list
        of values, or ``{"type": "list"|"condition", ...}``), for ``$inGroup``,
        ``$notInGroup`` and ``$savedGroup``; fixed for this compilation."""
        self._location: list[str | int] = []
        self._visited: list[str] = []

    @property
    def operators(self) -> Mapping[str, OperatorFactory]:
        return self._operators

    @property
    def location(self) -> tuple[str | int, ...]:
        """Where in the condition compilation currently is (keys and list indices)."""
        return tuple(self._location)

    def error(self, code: str, message: str) -> ConditionError:
        """A ``ConditionError`` located at the part of the condition being compiled."""
        return ConditionError(code, message, location=self.location)

    # -- attribute-level conditions ------------------------------------------------------

    def compile_condition(
        self, condition: Any, *, at: str | int | None = None
    ) -> AttributesPredicate:
        """Compile a condition over an object (GrowthBook's ``evalCondition``).

        Keys are ``$and``/``$or``/``$nor`` (lists of conditions), ``$not`` (a condition), or
        dot paths into the object whose values are value conditions. ``at`` names the part
        of the enclosing argument being compiled (e.g. a list index), for error locations.
        """
        if at is not None:
            self._location.append(at)
            try:
                return self.compile_condition(condition)
            finally:
                self._location.pop()
        if not isinstance(condition, Mapping):
            raise self.error(
                "invalid_condition",
                f"a condition must be an object, not {js_type(condition)}",
            )
        clauses: list[Callable[[Any], bool]] = []
        for key, value in condition.items():
            if not isinstance(key, str):
                raise self.error("invalid_condition", f"condition keys must be strings: {key!r}")
            self._location.append(key)
            try:
                clauses.append(self._compile_clause(key, value))
            finally:
                self._location.pop()
        return _all_of(clauses)

    def _compile_clause(self, key: str, value: Any) -> Callable[[Any], bool]:
        if key in _LOGICAL_OPERATORS:
            if key == "$not":
                return _negate(self.compile_condition(value))
            subs = self._compile_condition_list(key, value)
            if key == "$and":
                return _all_of(subs)
            # GrowthBook's evalOr treats an empty list as true, so an empty $or passes and
            # an empty $nor (its negation) fails.
            either = _any_of(subs) if subs else _always_true
            return either if key == "$or" else _negate(either)
        if key == "$savedGroup":
            return self._compile_saved_group(value)
        # Any other key, even one starting with "$" (e.g. "$groups"), is an attribute path.
        return _path_predicate(key, self.compile_value_condition(value))

    def _compile_saved_group(self, reference: Any) -> Callable[[Any], bool]:
        """GrowthBook's ``$savedGroup`` reference (``{"id": KEY, "attributeKey"?: PATH}``).

        A ``list`` group holds when the attribute (the reference's ``attributeKey``, else the
        group's) is ``$in`` its values; a ``condition`` group holds when its condition does.
        As in the SDK, a missing group, a malformed reference and a group already being
        expanded on this branch (a cycle) never hold. Saving refuses all three (see
        ``assay.engine._segments``); here they only compile to what the SDK evaluates.
        """
        if not isinstance(reference, Mapping) or not isinstance(reference.get("id"), str):
            if self.strict:
                raise self.error("invalid_segment_reference", '$savedGroup takes {"id": KEY}')
            return _always_false
        group_id: str = reference["id"]
        entry = self.saved_groups.get(group_id)
        attribute = reference.get("attributeKey", MISSING)
        if attribute is not MISSING and not isinstance(attribute, str):
            if self.strict:
                raise self.error("invalid_segment_reference", "attributeKey must be a string")
            return _always_false
        if group_id in self._visited or not isinstance(entry, Mapping):
            return _always_false
        kind = entry.get("type")
        if kind == "list":
            path = attribute if isinstance(attribute, str) else entry.get("attributeKey")
            values = entry.get("values")
            if not isinstance(path, str) or not isinstance(values, _ARRAY_TYPES):
                return _always_false
            return _path_predicate(path, self._compile_operator("$in", list(values)))
        if kind == "condition" and isinstance(entry.get("condition"), Mapping):
            self._visited.append(group_id)
            try:
                return self.compile_condition(entry["condition"])
            finally:
                self._visited.pop()
        return _always_false

    def _compile_condition_list(self, key: str, value: Any) -> list[Callable[[Any], bool]]:
        if not isinstance(value, _ARRAY_TYPES):
            raise self.error("invalid_condition", f"{key} takes a list of conditions")
        subs: list[Callable[[Any], bool]] = []
        for i, sub in enumerate(value):
            self._location.append(i)
            try:
                subs.append(self.compile_condition(sub))
            finally:
                self._location.pop()
        return subs

    # -- value-level conditions ----------------------------------------------------------

    def compile_value_condition(
        self, condition: Any, *, case_insensitive: bool = False, at: str | int | None = None
    ) -> ValuePredicate:
        """Compile a condition on one value (GrowthBook's ``evalConditionValue``).

        A string, number, boolean or null is an implicit equality with JavaScript coercion
        (``"8"`` equals ``8``; ``false`` never matches null); an array or a non-operator
        object is JSON equality; an operator object (``{"$gt": 1, "$lt": 5}``) requires
        every operator to hold. ``case_insensitive`` only affects the string case, as in
        the SDK's ``$alli``. ``at`` is as for ``compile_condition``.
        """
        if at is not None:
            self._location.append(at)
            try:
                return self.compile_value_condition(condition, case_insensitive=case_insensitive)
            finally:
                self._location.pop()
        if isinstance(condition, str):
            return _string_equality(condition, case_insensitive)
        if isinstance(condition, bool):
            expected_bool = condition

            def bool_equals(value: Any) -> bool:
                # GrowthBook: value !== null && !!value === condition.
                return (
                    value is not None
                    and value is not MISSING
                    and (js_truthy(value) is expected_bool)
                )

            return bool_equals
        if isinstance(condition, _NUMBER_TYPES):
            expected_number = _int_to_float(condition) if isinstance(condition, int) else condition

            def number_equals(value: Any) -> bool:
                # GrowthBook: value * 1 === condition, so numeric strings match too.
                return js_number(value) == expected_number

            return number_equals
        if condition is None:
            return is_nullish
        if isinstance(condition, Mapping) and is_operator_object(condition):
            return self._compile_operator_object(condition)
        if isinstance(condition, (*_ARRAY_TYPES, Mapping)):
            literal = condition

            def json_equals(value: Any) -> bool:
                return json_equal(value, literal)

            return json_equals
        raise self.error(
            "invalid_condition",
            f"unsupported value in condition: {type(condition).__name__}",
        )

    def _compile_operator_object(self, condition: Mapping[str, Any]) -> ValuePredicate:
        predicates: list[ValuePredicate] = []
        for op, argument in condition.items():
            self._location.append(op)
            try:
                predicates.append(self._compile_operator(op, argument))
            finally:
                self._location.pop()
        return _all_of(predicates)

    def _compile_operator(self, op: str, argument: Any) -> ValuePredicate:
        factory = self._operators.get(op)
        if factory is None:
            if self.strict:
                raise self.error("unknown_operator", f"unknown operator {op}")
            return _always_false  # the SDK logs and evaluates an unknown operator as false
        try:
            return factory(argument, self)
        except ConditionError as exc:
            if exc.location is None:
                exc.location = self.location
            if self.strict:
                raise
            return _always_false
        except (TypeError, ValueError) as exc:
            # A plugin factory that rejects its argument with a plain exception still gets
            # a machine-readable refusal rather than a 500 when the rule is saved.
            if self.strict:
                raise self.error("invalid_operator_argument", f"{op}: {exc}") from exc
            return _always_false


def _string_equality(expected: str, case_insensitive: bool) -> ValuePredicate:
    if case_insensitive:
        folded = expected.lower()

        def equals_folded(value: Any) -> bool:
            return js_string(value).lower() == folded

        return equals_folded

    def equals(value: Any) -> bool:
        # GrowthBook: value + "" === condition, so 8 matches "8" (and null matches "null").
        if type(value) is str:
            return value == expected
        return js_string(value) == expected

    return describe(equals, "str_eq", expected)


_GROUP_MARKERS: Final = ('"$inGroup"', '"$notInGroup"', '"$savedGroup"')


def mentions_saved_groups(condition_json: str) -> bool:
    """Whether a condition's JSON text may refer to saved groups (a cheap, safe superset:
    a string value spelling an operator name also counts)."""
    return any(marker in condition_json for marker in _GROUP_MARKERS)


def compile_condition(
    condition: Mapping[str, Any] | None,
    operators: Mapping[str, OperatorFactory],
    *,
    strict: bool = True,
    saved_groups: Mapping[str, Any] | None = None,
) -> AttributesPredicate:
    """Compile ``condition`` into a predicate over a subject's attributes.

    ``None`` and ``{}`` always hold. Raises ``ConditionError`` for anything invalid; with
    ``strict=False`` an unknown operator or an argument an operator rejects (a non-list
    ``$in``, a regex that does not compile, ...) evaluates to false instead, as in the SDK.
    Structural errors (a condition that is not an object, ``$and`` without a list) are
    refused in both modes.
    """
    if condition is None:
        return _always_true
    ctx = CompileContext(operators, strict=strict, saved_groups=saved_groups)
    return ctx.compile_condition(condition)


class ConditionCompiler:
    """Compiles conditions with one operator table and caches the results by content.

    Equal conditions (same canonical JSON) share one compiled predicate, so a snapshot with
    hundreds of rules targeting the same audience compiles it once. The operator table and
    saved groups are copied at construction: a compiler is tied to one snapshot's view of
    them, and a new snapshot with different plugins or groups uses a new compiler.
    """

    def __init__(
        self,
        operators: Mapping[str, OperatorFactory],
        *,
        strict: bool = True,
        saved_groups: Mapping[str, Any] | None = None,
        max_entries: int = 10_000,
    ) -> None:
        self._operators: Mapping[str, OperatorFactory] = MappingProxyType(dict(operators))
        self._saved_groups: Mapping[str, Any] = MappingProxyType(dict(saved_groups or {}))
        self._strict = strict
        self._max_entries = max_entries
        self._cache: dict[str, AttributesPredicate] = {}

    @property
    def operators(self) -> Mapping[str, OperatorFactory]:
        return self._operators

    @property
    def strict(self) -> bool:
        return self._strict

    def __len__(self) -> int:
        """Number of distinct conditions currently cached."""
        return len(self._cache)

    def clear(self) -> None:
        self._cache.clear()

    def compile(
        self,
        condition: Mapping[str, Any] | None,
        *,
        saved_groups: Mapping[str, Any] | None = None,
        groups_version: str = "",
    ) -> AttributesPredicate:
        """The compiled predicate for ``condition``, compiled at most once per content.

        ``saved_groups`` replaces the compiler's own for this call (a snapshot passes each
        project's segments); ``groups_version`` must then name their content, because a
        condition that refers to a group is cached under it too.
        """
        if condition is None:
            return _always_true
        try:
            key = self._cache_key(condition)
            groups = self._saved_groups if saved_groups is None else saved_groups
            if saved_groups is not None and mentions_saved_groups(key):
                key = f"{groups_version}\x00{key}"
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            ctx = CompileContext(self._operators, strict=self._strict, saved_groups=groups)
            predicate = ctx.compile_condition(condition)
        except RecursionError:
            # Nested past the interpreter's limit (e.g. $and inside $and, hundreds deep,
            # from a definitions file: HTTP bodies stop at 64 levels before this).
            raise ConditionError(
                "invalid_condition", "the condition is nested too deeply"
            ) from None
        if len(self._cache) >= self._max_entries:
            # Evict the oldest entry (dicts keep insertion order): bounded memory for a
            # long-lived compiler, and snapshots recompile rarely enough for FIFO to do.
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = predicate
        return predicate

    @staticmethod
    def _cache_key(condition: Any) -> str:
        try:
            return json.dumps(condition, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ConditionError(
                "invalid_condition", f"a condition must be JSON-serialisable: {exc}"
            ) from exc
