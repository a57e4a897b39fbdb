"""Every case of GrowthBook's SDK conformance file, run against assay's assignment core.

The cases live in ``tests/conformance/growthbook-cases.json`` (MIT, from GrowthBook; the
license is beside them). A missing file is a collection error, never a skip: the
suite must not go green without having checked agreement with GrowthBook.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from assay.engine._core._bucketing import (
    choose_variation,
    fnv1a32,
    gb_hash,
    get_bucket_ranges,
    get_equal_weights,
    in_namespace,
)
from assay.engine._core._compiled import native
from assay.engine._core._conditions import ConditionCompiler, ConditionError, compile_condition
from assay.engine._core._plans import condition_node
from assay.plugins._growthbook_operators import GROWTHBOOK_OPERATORS

# Both decide paths, compiled and pure Python, must pass (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("decide_path")

REPO_ROOT = Path(__file__).resolve().parents[3]
CASES_PATH = REPO_ROOT / "tests" / "conformance" / "growthbook-cases.json"


def _load_cases() -> dict[str, Any]:
    if not CASES_PATH.is_file():
        raise FileNotFoundError(
            f"GrowthBook conformance cases not found at {CASES_PATH.resolve()}; "
            "the repository carries them under tests/conformance/"
        )
    cases: dict[str, Any] = json.loads(CASES_PATH.read_text(encoding="utf-8"))
    return cases


CASES = _load_cases()


# On the compiled path (the decide_path fixture), hashing, conditions and the choice of a
# variation are the C extension's, as decide runs them.
def _hash(path: str, seed: str, value: str, version: int) -> float | None:
    if path == "compiled":
        assert native is not None
        return native.gb_hash(seed, value, version)
    return gb_hash(seed, value, version)


def _holds(path: str, predicate: Any, attributes: Any) -> Any:
    if path == "compiled":
        assert native is not None
        return native.condition(condition_node(predicate), attributes)
    return predicate(attributes)


def _unique_ids(names: list[str]) -> list[str]:
    # Some case names repeat (e.g. "$not - pass"); number the repeats so every id is unique.
    seen: Counter[str] = Counter()
    ids = []
    for name in names:
        seen[name] += 1
        ids.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return ids


def test_every_section_is_known() -> None:
    # A new section in a future version of the file must get a test, not be ignored.
    assert set(CASES) == {
        "specVersion",
        "evalCondition",
        "hash",
        "getBucketRange",
        "chooseVariation",
        "inNamespace",
        "getEqualWeights",
    }


# --------------------------------------------------------------------------------------
# evalCondition
# --------------------------------------------------------------------------------------

# Cases whose condition assay refuses when a rule is saved (strict mode), with the code it
# refuses them with. GrowthBook evaluates these to false at run time; assay's tolerant mode
# (strict=False) must do the same.
REFUSED_IN_STRICT_MODE = {
    "$in - not array": "invalid_operator_argument",
    "$nin - not array": "invalid_operator_argument",
    "unknown operator - pass": "unknown_operator",
    "$regex invalid - pass": "invalid_regex",
    "$regex invalid - fail": "invalid_regex",
}

EVAL_CONDITION = CASES["evalCondition"]
EVAL_CONDITION_IDS = _unique_ids([case[0] for case in EVAL_CONDITION])


def _saved_groups(case: list[Any]) -> dict[str, list[Any]] | None:
    return case[4] if len(case) > 4 else None


@pytest.mark.parametrize("case", EVAL_CONDITION, ids=EVAL_CONDITION_IDS)
def test_eval_condition(case: list[Any], decide_path: str) -> None:
    name, condition, attributes, expected = case[:4]
    saved_groups = _saved_groups(case)
    if name in REFUSED_IN_STRICT_MODE:
        with pytest.raises(ConditionError) as excinfo:
            compile_condition(condition, GROWTHBOOK_OPERATORS, saved_groups=saved_groups)
        assert excinfo.value.code == REFUSED_IN_STRICT_MODE[name]
    else:
        predicate = compile_condition(condition, GROWTHBOOK_OPERATORS, saved_groups=saved_groups)
        assert _holds(decide_path, predicate, attributes) is expected
    tolerant = compile_condition(
        condition, GROWTHBOOK_OPERATORS, strict=False, saved_groups=saved_groups
    )
    assert _holds(decide_path, tolerant, attributes) is expected


def test_refused_cases_exist() -> None:
    # Guards the table above against a renamed case silently turning into a strict pass.
    assert set(REFUSED_IN_STRICT_MODE) <= {case[0] for case in EVAL_CONDITION}


def test_eval_condition_through_one_caching_compiler(decide_path: str) -> None:
    # The engine compiles through a ConditionCompiler that shares predicates between equal
    # conditions; sharing must not change any answer.
    compilers: dict[str, ConditionCompiler] = {}
    for case in EVAL_CONDITION:
        name, condition, attributes, expected = case[:4]
        groups = _saved_groups(case)
        group_key = json.dumps(groups, sort_keys=True)
        compiler = compilers.setdefault(
            group_key,
            ConditionCompiler(GROWTHBOOK_OPERATORS, strict=False, saved_groups=groups),
        )
        assert _holds(decide_path, compiler.compile(condition), attributes) is expected, name
    assert sum(len(c) for c in compilers.values()) < len(EVAL_CONDITION)  # some were shared


# --------------------------------------------------------------------------------------
# hash, bucket ranges, variations, namespaces, weights
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "value", "version", "expected"),
    CASES["hash"],
    ids=[f"v{v} seed={s!r} value={x!r}" for s, x, v, _ in CASES["hash"]],
)
def test_hash(
    seed: str, value: str, version: int, expected: float | None, decide_path: str
) -> None:
    # Exact equality: n / 1000 and n / 10000 are correctly rounded, as in JavaScript.
    assert _hash(decide_path, seed, value, version) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [case[1:] for case in CASES["getBucketRange"]],
    ids=[case[0] for case in CASES["getBucketRange"]],
)
def test_get_bucket_ranges(args: list[Any], expected: list[list[float]]) -> None:
    num_variations, coverage, weights = args
    ranges = get_bucket_ranges(num_variations, coverage, weights)
    # The file's numbers are rounded (0.2 * 0.3 is not exactly 0.06 in binary).
    assert [[round(start, 6), round(end, 6)] for start, end in ranges] == expected


@pytest.mark.parametrize(
    ("n", "ranges", "expected"),
    [case[1:] for case in CASES["chooseVariation"]],
    ids=[case[0] for case in CASES["chooseVariation"]],
)
def test_choose_variation(
    n: float, ranges: list[list[float]], expected: int, decide_path: str
) -> None:
    if decide_path == "compiled":
        assert native is not None
        pairs = tuple((float(start), float(end)) for start, end in ranges)
        assert native.choose(float(n), pairs) == expected
    else:
        assert choose_variation(n, [(start, end) for start, end in ranges]) == expected


@pytest.mark.parametrize(
    ("user_id", "namespace", "expected"),
    [case[1:] for case in CASES["inNamespace"]],
    ids=[case[0] for case in CASES["inNamespace"]],
)
def test_in_namespace(user_id: str, namespace: list[Any], expected: bool, decide_path: str) -> None:
    namespace_id, start, end = namespace
    if decide_path == "compiled":
        n = _hash(decide_path, "__" + namespace_id, user_id, 1)
        assert n is not None
        assert (start <= n < end) is expected
    else:
        assert in_namespace(user_id, (namespace_id, start, end)) is expected


@pytest.mark.parametrize(
    ("n", "expected"),
    CASES["getEqualWeights"],
    ids=[f"n={case[0]}" for case in CASES["getEqualWeights"]],
)
def test_get_equal_weights(n: int, expected: list[float]) -> None:
    # The file lists 1/3 to 8 digits.
    assert [round(w, 8) for w in get_equal_weights(n)] == expected


# --------------------------------------------------------------------------------------
# Non-ASCII hashing. The JavaScript SDK hashes UTF-16 code units (charCodeAt), so a
# character outside the BMP counts as its two surrogates; GrowthBook's Python SDK iterates
# code points instead and disagrees for such characters. assay follows JavaScript.
# --------------------------------------------------------------------------------------


def _reference_fnv1a32(text: str) -> int:
    """An independent FNV-1a: UTF-16LE bytes read as 16-bit units, and the SDK's
    shift-and-add form of the multiplication by the FNV prime."""
    data = text.encode("utf-16-le", "surrogatepass")
    h = 0x811C9DC5
    for i in range(0, len(data), 2):
        h ^= data[i] | (data[i + 1] << 8)
        h = (h + (h << 1) + (h << 4) + (h << 7) + (h << 8) + (h << 24)) & 0xFFFFFFFF
    return h


# (text, fnv1a32, v1 with seed "seed", v2 with seed "seed", v2 with seed "exp-é").
# The numbers were computed with the UTF-16 definition above and cross-checked with the
# JavaScript definition run on Node (charCodeAt, shift-and-add, >>> 0). For "é" by hand:
# (0x811C9DC5 ^ 0xE9) * 16777619 mod 2**32 = 0x6C0B6C44 = 1812687940.
NON_ASCII_HASHES = [
    ("é", 1812687940, 0.137, 0.8663, 0.2367),
    ("Zürich", 3699447101, 0.068, 0.3917, 0.3809),
    ("Ünïcødé", 155505236, 0.865, 0.3849, 0.8495),
    ("日本語", 1409693518, 0.215, 0.4482, 0.7798),
    ("😀", 3409036472, 0.429, 0.4346, 0.2806),
    ("\U0001d49c", 383452068, 0.657, 0.2865, 0.793),  # MATHEMATICAL SCRIPT CAPITAL A
    ("user-é-😀", 1529698718, 0.407, 0.4968, 0.2071),
    ("naïve-\U0001d49c\U0001d49c", 658854787, 0.686, 0.9666, 0.2615),
]


@pytest.mark.parametrize(
    ("text", "fnv", "v1", "v2", "v2_accented_seed"),
    NON_ASCII_HASHES,
    ids=[case[0] for case in NON_ASCII_HASHES],
)
def test_non_ascii_hashing(
    text: str, fnv: int, v1: float, v2: float, v2_accented_seed: float, decide_path: str
) -> None:
    assert _reference_fnv1a32(text) == fnv
    assert fnv1a32(text) == fnv
    assert _hash(decide_path, "seed", text, 1) == v1
    assert _hash(decide_path, "seed", text, 2) == v2
    assert _hash(decide_path, "exp-é", text, 2) == v2_accented_seed


def test_first_byte_by_hand() -> None:
    assert fnv1a32("é") == ((0x811C9DC5 ^ 0xE9) * 0x01000193) % 2**32 == 0x6C0B6C44


@pytest.mark.parametrize("text", ["😀", "\U0001d49c", "a😀b", "\U0001d49c\U0001d49c"])
def test_astral_characters_hash_as_surrogate_pairs(text: str) -> None:
    # A Python string holding each surrogate pair as two code points is what JavaScript sees.
    as_pairs = "".join(
        chr(0xD800 + ((ord(ch) - 0x10000) >> 10)) + chr(0xDC00 + ((ord(ch) - 0x10000) & 0x3FF))
        if ord(ch) > 0xFFFF
        else ch
        for ch in text
    )
    assert len(as_pairs) > len(text)
    assert fnv1a32(text) == fnv1a32(as_pairs) == _reference_fnv1a32(text)


def test_astral_hash_differs_from_code_point_hashing() -> None:
    # Hashing code points (as GrowthBook's Python SDK does) would give another number.
    h = 0x811C9DC5
    for ch in "😀":
        h = ((h ^ ord(ch)) * 0x01000193) % 2**32
    assert h != fnv1a32("😀")


@pytest.mark.parametrize("seed", ["", "exp", "exp-é", "\U0001d49c-seed"])
def test_v2_seed_prefix_cache_is_transparent(seed: str, decide_path: str) -> None:
    # gb_hash resumes FNV from a cached per-seed state; it must equal hashing seed + value.
    for value in ["", "1", "user-42", "Zürich", "😀", "\ud800", "a\udfffb"]:
        inner = _reference_fnv1a32(seed + value)
        expected = (_reference_fnv1a32(str(inner)) % 10000) / 10000
        assert _hash(decide_path, seed, value, 2) == expected
