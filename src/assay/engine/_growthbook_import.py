"""Import a GrowthBook SDK features payload as assay definitions, keeping every subject's
value and variant.

The input is what GrowthBook serves SDKs (``GET /api/features/<clientKey>``)::

    {"status": 200, "features": {"key": {"defaultValue": ..., "rules": [...]}},
     "savedGroups": {...}, "dateUpdated": "..."}

or the bare ``features`` object. Each feature becomes a flag (type from its values), each
rule becomes a rule of the same kind in the same order:

- ``force`` without ``coverage``/``range``: a ``force`` rule.
- ``force`` with ``coverage`` (or a ``range`` starting at 0): a ``rollout`` rule.
- ``variations``: a RUNNING experiment (key, variations, weights, coverage, seed, hash
  version and attribute, condition, namespace as a layer range, variant keys and names from
  ``meta``) and an ``experiment`` rule pointing at it.

Where GrowthBook's semantics differ from assay's, the import translates rather than copies,
so that decide answers what the GrowthBook SDK answers for the same payload:

- GrowthBook defaults ``hashVersion`` to 1 (assay to 2): a missing one is written as 1.
- A rollout includes hash ``n < coverage`` in GrowthBook and ``n <= coverage`` in assay.
  Hashes are multiples of 1/1000 (v1) or 1/10000 (v2), so a coverage lying exactly on such a
  multiple is moved half a step down, where both comparisons agree (0.5 -> 0.49995 for v2).
- Experiment weights GrowthBook would reject (wrong count, not summing to ~1) are replaced by
  equal weights, as the SDK does at bucketing time.
- Sticky bucketing: an experiment rule carrying ``bucketVersion`` or ``minBucketVersion``
  (GrowthBook sends them when sticky bucketing is on), unless ``disableStickyBucketing``,
  becomes a sticky experiment with those versions, and keeps its ``fallbackAttribute``.
- GrowthBook uses an experiment's ``fallbackAttribute`` only with sticky bucketing; assay
  would always use it, so without sticky bucketing it is left out (and reported).
- Saved groups (the payload's ``savedGroups``) referenced by ``$inGroup``/``$notInGroup``/
  ``$savedGroup`` become segments of the same key, and the conditions keep their references
  (``assay.engine._growthbook_segments``). A reference assay cannot keep exactly (a group
  missing from the payload, which the SDK treats as empty) is inlined instead.
- Keys assay cannot take as they are (an experiment key with spaces, one experiment key used
  by two features) get a new assay key, and the original key is kept as the hashing seed.

What cannot be represented is never dropped silently: it is returned as a warning with its
location (``features.checkout.rules[2]``), and a rule whose audience or assignment would
change (prerequisites, ``filters``, explicit ``ranges``, passthrough variations, bandits,
a second experiment on one flag, overlapping namespace ranges) is skipped as a whole.
Things that do not change a stateless evaluation (sticky-bucketing versions, ``phase``,
``tracks``) are imported without and reported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, TypeGuard

import msgspec

from assay.engine._definitions import (
    ConditionValidator,
    Definitions,
    ExperimentDefinition,
    LoadReport,
    load_definitions,
)
from assay.engine._errors import ValidationFailed
from assay.engine._growthbook_segments import SavedGroupSegments, sticky_bucketing
from assay.engine._model import (
    ApiKey,
    ExperimentRule,
    ExperimentStatus,
    FlagSpec,
    FlagType,
    ForceRule,
    LayerRange,
    LayerSpec,
    RolloutRule,
    Rule,
    Struct,
    Variant,
)
from assay.engine._service import ConfigService

__all__ = [
    "GrowthBookImport",
    "ImportWarning",
    "convert_growthbook",
    "import_growthbook",
    "parse_growthbook_payload",
]

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_NAME_MAX = 200

# Top-level keys of the SDK payload that carry nothing to import (``status`` is the HTTP
# status GrowthBook repeats in the body; ``dateUpdated`` a cache hint).
_PAYLOAD_METADATA = {"status", "dateUpdated"}
# Why a field of a rule is not imported though the rule is: none of these changes what a
# stateless SDK (no sticky-bucket service) serves.
_IGNORED_RULE_FIELDS = {
    "phase": "experiment phase id, only reported with exposures",
    "tracks": "remote-evaluation tracking callbacks; the value is imported, the tracking not",
    "name": "experiment name (kept as the assay experiment's name)",
}


class ImportWarning(Struct, frozen=True, kw_only=True):
    """Something in the payload that was not imported, or imported differently."""

    location: str
    """Where in the payload, e.g. ``features.checkout.rules[2]``."""
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class GrowthBookImport(Struct, frozen=True, kw_only=True):
    definitions: Definitions
    warnings: list[ImportWarning] = []


_NEVER: dict[str, Any] = {"$not": {}}
"""A condition that never holds, in GrowthBook's language as in assay's."""


class _Skip(Exception):
    """The rule (or feature) cannot be imported faithfully: skip it, saying why."""


def parse_growthbook_payload(data: bytes | str) -> dict[str, Any]:
    """Decode a payload file (JSON); raises ``ValidationFailed`` when it is not an object."""
    try:
        payload = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ValidationFailed(
            f"not a valid JSON document: {exc}", code="invalid_payload"
        ) from None
    if not isinstance(payload, dict):
        raise ValidationFailed(
            "a GrowthBook payload is a JSON object with a 'features' object",
            code="invalid_payload",
        )
    return payload


def convert_growthbook(payload: Mapping[str, Any]) -> GrowthBookImport:
    """Convert an SDK payload (or a bare features object) into definitions and warnings."""
    return _Converter(payload).run()


async def import_growthbook(
    service: ConfigService,
    principal: ApiKey,
    project: str,
    payload: Mapping[str, Any],
    *,
    dry_run: bool = False,
    create_project: bool = False,
    validate_condition: ConditionValidator | None = None,
) -> LoadReport:
    """Convert ``payload`` and load it into ``project``; the report carries the warnings.

    Idempotent like ``load_definitions``: importing the same payload again changes nothing.
    """
    result = convert_growthbook(payload)
    report = await load_definitions(
        service,
        principal,
        project,
        result.definitions,
        dry_run=dry_run,
        create_project=create_project,
        validate_condition=validate_condition,
    )
    return msgspec.structs.replace(
        report, warnings=[*report.warnings, *(str(w) for w in result.warnings)]
    )


# --------------------------------------------------------------------------------------
# Conversion.
# --------------------------------------------------------------------------------------


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flag_type(value: Any) -> FlagType:
    if isinstance(value, bool):
        return FlagType.BOOLEAN
    if isinstance(value, str):
        return FlagType.STRING
    if _is_number(value):
        return FlagType.NUMBER
    return FlagType.JSON


def _hash_version(rule: Mapping[str, Any]) -> int:
    # GrowthBook: ``hashVersion || 1``; any other version hashes to nothing.
    version = rule.get("hashVersion") or 1
    if version not in (1, 2) or isinstance(version, bool):
        raise _Skip(f"hashVersion {version!r} never assigns anyone in GrowthBook; rule skipped")
    return int(version)


def rollout_coverage(coverage: float, hash_version: int) -> float:
    """The assay rollout coverage including exactly the subjects GrowthBook includes.

    GrowthBook includes hash ``n`` when ``n < coverage``; assay when ``n <= coverage``.
    ``n`` is ``k / 1000`` (v1) or ``k / 10000`` (v2), computed by that float division, so
    the two agree unless ``coverage`` equals one of those values exactly; then the
    coverage moves half a step down, strictly between two possible hashes, where ``<`` and
    ``<=`` agree (and where they would keep agreeing were either side to switch).
    """
    if coverage <= 0:
        return 0.0
    if coverage >= 1:
        return 1.0
    steps = 1000 if hash_version == 1 else 10000
    k = math.ceil(coverage * steps)
    # Correct for rounding in the multiplication: k / steps is the smallest hash >= coverage.
    while k > 0 and (k - 1) / steps >= coverage:
        k -= 1
    while k / steps < coverage:
        k += 1
    if k / steps != coverage:
        return coverage
    return (k - 0.5) / steps


def _valid_weights(weights: Any, n: int) -> TypeGuard[list[float]]:
    # GrowthBook's rule for using the given weights: one finite, non-negative number per
    # variation, summing to 0.99..1.01; anything else buckets with equal weights.
    if not isinstance(weights, list) or len(weights) != n:
        return False
    if not all(_is_number(w) and math.isfinite(w) and w >= 0 for w in weights):
        return False
    total = 0.0
    for w in weights:
        total += w
    return 0.99 <= total <= 1.01


def _key_like(text: str) -> str:
    """``text`` made into a valid assay key (letters, digits, '_', '.', '-'; 1-128)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-_.")
    return (cleaned or "x")[:128]


class _Converter:
    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.payload = payload
        self.warnings: list[ImportWarning] = []
        self.flags: list[FlagSpec] = []
        self.experiments: list[ExperimentDefinition] = []
        self.layers: dict[str, LayerSpec] = {}
        self.experiment_keys: set[str] = set()
        self.layer_ranges: dict[str, list[tuple[float, float, str]]] = {}
        self.saved_groups: Mapping[str, Any] = {}
        self.segments = SavedGroupSegments({})

    def warn(self, location: str, message: str) -> None:
        self.warnings.append(ImportWarning(location=location, message=message))

    # -- payload ------------------------------------------------------------------------

    def run(self) -> GrowthBookImport:
        features = self._features()
        for key, feature in features.items():
            self._feature(str(key), feature)
        definitions = Definitions(
            layers=list(self.layers.values()),
            segments=self.segments.segments(),
            experiments=self.experiments,
            flags=self.flags,
        )
        return GrowthBookImport(definitions=definitions, warnings=self.warnings)

    def _features(self) -> Mapping[str, Any]:
        payload = self.payload
        features = payload.get("features")
        if not self._is_sdk_payload(payload):
            return payload  # the bare features object
        for key, value in payload.items():
            if key in ("features", "savedGroups") or key in _PAYLOAD_METADATA:
                continue
            if key == "encryptedFeatures":
                self.warn(
                    key,
                    "encrypted features are not imported: decrypt the payload first "
                    "(or turn off encryption for the SDK connection) and import it again",
                )
            elif key == "encryptedSavedGroups":
                self.warn(
                    key,
                    "encrypted saved groups are not imported: rules referencing them are "
                    "skipped; decrypt the payload first",
                )
            elif key in ("experiments", "encryptedExperiments"):
                if value:
                    self.warn(
                        key,
                        "auto experiments (visual editor, URL redirects) are not imported: "
                        "assay has no client-side experiments",
                    )
            else:
                self.warn(key, "unknown payload field, not imported")
        groups = payload.get("savedGroups")
        if isinstance(groups, Mapping):
            self.saved_groups = groups
            self.segments = SavedGroupSegments(groups)
        elif groups is not None:
            self.warn("savedGroups", "not an object; saved groups not imported")
        if features is None:
            return {}
        if not isinstance(features, Mapping):
            raise ValidationFailed("'features' must be an object", code="invalid_payload")
        return features

    @staticmethod
    def _is_sdk_payload(payload: Mapping[str, Any]) -> bool:
        # A bare features object could hold a feature named "features"; the SDK payload's
        # "features" holds feature keys, while a feature holds defaultValue/rules.
        if "encryptedFeatures" in payload:
            return True
        features = payload.get("features")
        if not isinstance(features, Mapping):
            return False
        looks_like_feature = bool(features) and set(features) <= {"defaultValue", "rules"}
        return not looks_like_feature or any(
            k in payload for k in ("status", "dateUpdated", "savedGroups")
        )

    # -- features -----------------------------------------------------------------------

    def _feature(self, key: str, feature: Any) -> None:
        loc = f"features.{key}"
        if not _KEY.match(key):
            self.warn(
                loc,
                "feature key is not a valid assay flag key (letters, digits, '_', '.', '-'); "
                "feature not imported",
            )
            return
        if not isinstance(feature, Mapping):
            self.warn(loc, "a feature must be an object; feature not imported")
            return
        for field in feature:
            if field not in ("defaultValue", "rules"):
                self.warn(f"{loc}.{field}", "unknown feature field, not imported")
        default = feature.get("defaultValue")
        rules_in = feature.get("rules") or []
        if not isinstance(rules_in, list):
            self.warn(f"{loc}.rules", "rules must be a list; feature not imported")
            return
        rules: list[Rule] = []
        values: list[Any] = [default]
        rule_ids: set[str] = set()
        has_experiment: str | None = None
        for i, rule in enumerate(rules_in):
            rloc = f"{loc}.rules[{i}]"
            try:
                if not isinstance(rule, Mapping):
                    raise _Skip("a rule must be an object; rule skipped")
                converted, rule_values = self._rule(key, rule, rloc, has_experiment)
            except _Skip as skip:
                self.warn(rloc, str(skip))
                continue
            rule_id = rule.get("id")
            if isinstance(rule_id, str) and _KEY.match(rule_id) and rule_id not in rule_ids:
                rule_ids.add(rule_id)
                converted = msgspec.structs.replace(converted, id=rule_id)
            elif rule_id is not None:
                self.warn(f"{rloc}.id", f"rule id {rule_id!r} is not a valid or unique key")
            if isinstance(converted, ExperimentRule):
                has_experiment = converted.experiment
            rules.append(converted)
            values.extend(rule_values)
        flag_type = _flag_type(default)
        if any(_flag_type(v) is not flag_type for v in values):
            # Values of mixed kinds (GrowthBook does not check them): JSON holds any value.
            flag_type = FlagType.JSON
        self.flags.append(
            FlagSpec(
                key=key,
                type=flag_type,
                description="Imported from GrowthBook.",
                default_value=default,
                rules=rules,
            )
        )

    # -- rules --------------------------------------------------------------------------

    def _rule(
        self, feature: str, rule: Mapping[str, Any], loc: str, has_experiment: str | None
    ) -> tuple[Rule, list[Any]]:
        if rule.get("parentConditions"):
            raise _Skip(
                "parentConditions (prerequisite features) are not imported: GrowthBook "
                "evaluates them per rule and gates the whole feature to null, which assay's "
                "flag prerequisites do not reproduce; rule skipped"
            )
        if rule.get("filters"):
            raise _Skip(
                "filters (hash-range exclusions) cannot be expressed in assay; rule skipped"
            )
        condition = self._condition(rule.get("condition"), loc)
        used = {"id", "condition", "parentConditions", "filters"}
        if rule.get("force") is not None:
            converted: Rule
            if rule.get("coverage") is None and rule.get("range") is None:
                converted = ForceRule(condition=condition, value=rule["force"])
                # GrowthBook ignores hashing fields on a rule that does not hash.
                used |= {"force", "hashAttribute", "fallbackAttribute", "seed", "hashVersion"}
            else:
                converted = self._rollout(rule, condition)
                used |= {"force", "coverage", "range", "hashAttribute", "fallbackAttribute"}
                used |= {"seed", "hashVersion"}
            self._report_unused(rule, used, loc)
            return converted, [rule["force"]]
        if rule.get("contextualVariations") is not None or rule.get("contextualBanditRef"):
            raise _Skip("contextual bandits are not imported; rule skipped")
        if rule.get("variations") is None:
            raise _Skip("a rule with neither force nor variations does nothing; skipped")
        if has_experiment is not None:
            raise _Skip(
                f"this flag already runs experiment {has_experiment!r} and assay allows one "
                "running experiment per flag; rule skipped"
            )
        experiment = self._experiment(feature, rule, condition, loc)
        used |= {
            "force",
            "variations",
            "key",
            "weights",
            "coverage",
            "seed",
            "hashVersion",
            "hashAttribute",
            "fallbackAttribute",
            "namespace",
            "meta",
            "ranges",
            "bucketVersion",
            "minBucketVersion",
            "disableStickyBucketing",
        }
        self._report_unused(rule, used, loc)
        self.experiments.append(experiment)
        self.experiment_keys.add(experiment.key)
        if experiment.layer is not None:
            r = experiment.layer
            self.layer_ranges.setdefault(r.layer, []).append((r.start, r.end, experiment.key))
            self.layers.setdefault(
                r.layer, LayerSpec(key=r.layer, description="GrowthBook namespace.")
            )
        return ExperimentRule(experiment=experiment.key), [v.value for v in experiment.variants]

    def _report_unused(self, rule: Mapping[str, Any], used: set[str], loc: str) -> None:
        notes = []
        for field, value in rule.items():
            if field in used or value is None:
                continue
            if field == "name" and rule.get("variations") is not None:
                continue  # taken as the experiment's name
            reason = _IGNORED_RULE_FIELDS.get(field, "unknown rule field")
            notes.append(f"{field} ({reason})")
        if notes:
            self.warn(loc, "not imported: " + "; ".join(notes))

    def _rollout(self, rule: Mapping[str, Any], condition: dict[str, Any] | None) -> RolloutRule:
        version = _hash_version(rule)
        bounds = rule.get("range")
        if bounds is not None:
            # GrowthBook: a range decides instead of the coverage, ``start <= n < end``.
            if (
                not isinstance(bounds, list)
                or len(bounds) != 2
                or not all(_is_number(b) for b in bounds)
            ):
                raise _Skip(f"range {bounds!r} is not [start, end]; rule skipped")
            if bounds[0] > 0:
                raise _Skip(
                    f"range {bounds!r} does not start at 0: assay rollouts cover [0, coverage); "
                    "rule skipped"
                )
            share = float(bounds[1])
        else:
            coverage = rule.get("coverage")
            if not _is_number(coverage):
                raise _Skip(f"coverage {coverage!r} is not a number; rule skipped")
            share = float(coverage)
        return RolloutRule(
            condition=condition,
            coverage=rollout_coverage(share, version),
            value=rule["force"],
            hash_attribute=self._attribute(rule, "hashAttribute") or "id",
            # GrowthBook's Python SDK uses a rollout's fallback attribute as assay does.
            fallback_attribute=self._attribute(rule, "fallbackAttribute"),
            seed=self._seed(rule),
            hash_version=2 if version == 2 else 1,
        )

    @staticmethod
    def _attribute(rule: Mapping[str, Any], field: str) -> str | None:
        value = rule.get(field)
        if value is None:
            return None
        if not isinstance(value, str):
            raise _Skip(f"{field} {value!r} is not a string; rule skipped")
        return value

    @staticmethod
    def _seed(rule: Mapping[str, Any]) -> str | None:
        seed = rule.get("seed")
        if seed is None or seed == "":
            return None  # ``seed || key`` in both
        if not isinstance(seed, str):
            raise _Skip(f"seed {seed!r} is not a string; rule skipped")
        return seed

    def _experiment(
        self,
        feature: str,
        rule: Mapping[str, Any],
        condition: dict[str, Any] | None,
        loc: str,
    ) -> ExperimentDefinition:
        variations = rule["variations"]
        if not isinstance(variations, list) or len(variations) < 2:
            raise _Skip("fewer than two variations never assign anyone; rule skipped")
        if rule.get("ranges"):
            raise _Skip(
                "explicit bucket ranges are not imported (assay derives them from coverage "
                "and weights); rule skipped"
            )
        n = len(variations)
        version = _hash_version(rule)
        gb_key = rule.get("key") or feature
        if not isinstance(gb_key, str):
            raise _Skip(f"experiment key {gb_key!r} is not a string; rule skipped")
        seed = self._seed(rule) or gb_key

        coverage = rule.get("coverage")
        if coverage is None:
            coverage = 1
        if not _is_number(coverage):
            raise _Skip(f"coverage {coverage!r} is not a number; rule skipped")
        coverage = min(max(float(coverage), 0.0), 1.0)  # getBucketRanges clamps the same way

        weights = rule.get("weights")
        if weights is not None and not _valid_weights(weights, n):
            self.warn(
                f"{loc}.weights",
                f"weights {weights!r} are not {n} shares summing to 1; GrowthBook buckets "
                "with equal weights, and so does the import",
            )
        shares = [float(w) for w in weights] if _valid_weights(weights, n) else [1 / n] * n

        meta = rule.get("meta")
        if meta is not None and not isinstance(meta, list):
            self.warn(f"{loc}.meta", "meta is not a list; variant keys are their indexes")
            meta = None
        metas: list[Mapping[str, Any]] = []
        for i in range(n):
            m = meta[i] if meta is not None and i < len(meta) else None
            metas.append(m if isinstance(m, Mapping) else {})
            if metas[i].get("passthrough"):
                raise _Skip(
                    f"variation {i} is a passthrough (holdout) variation, which assay does not "
                    "have; rule skipped"
                )
        keys = self._variant_keys([m.get("key") for m in metas], loc)
        variants = [
            Variant(
                key=keys[i],
                value=value,
                weight=shares[i],
                name=m["name"][:_NAME_MAX] if isinstance(m.get("name"), str) else "",
            )
            for i, (value, m) in enumerate(zip(variations, metas, strict=True))
        ]

        layer = self._namespace(rule.get("namespace"), loc)
        try:
            sticky = sticky_bucketing(rule, loc, self.warn)
        except ValueError as exc:
            raise _Skip(str(exc)) from None
        if rule.get("fallbackAttribute") and sticky is None:
            self.warn(
                f"{loc}.fallbackAttribute",
                "not imported: GrowthBook uses an experiment's fallback attribute only with "
                "sticky bucketing, and assay would use it always, enrolling subjects "
                "GrowthBook leaves out",
            )

        key = self._experiment_key(gb_key, feature, loc)
        if layer is not None:
            for start, end, other in self.layer_ranges.get(layer.layer, []):
                if start < layer.end and layer.start < end:
                    raise _Skip(
                        f"namespace {layer.layer!r} range [{layer.start}, {layer.end}) overlaps "
                        f"experiment {other!r}, and assay refuses overlapping running "
                        "experiments in a layer; rule skipped"
                    )
        name = rule.get("name")
        return ExperimentDefinition(
            key=key,
            name=name[:_NAME_MAX] if isinstance(name, str) else "",
            description=f"Imported from GrowthBook feature {feature!r}"
            + (f", experiment {gb_key!r}." if gb_key != key else "."),
            variants=variants,
            coverage=coverage,
            seed=None if seed == key else seed,
            hash_version=2 if version == 2 else 1,
            hash_attribute=self._attribute(rule, "hashAttribute") or "id",
            condition=condition,
            layer=layer,
            status=ExperimentStatus.RUNNING,
            **(
                {}
                if sticky is None
                else {**sticky, "fallback_attribute": self._attribute(rule, "fallbackAttribute")}
            ),
        )

    def _variant_keys(self, wanted: list[Any], loc: str) -> list[str]:
        """Variant keys: ``meta[i].key`` where usable, else GrowthBook's own default, the
        index (``"0"``, ``"1"``, ...), made unique against every other key."""
        keys: list[str | None] = []
        for k in wanted:
            ok = isinstance(k, str) and _KEY.match(k) is not None and k not in keys
            keys.append(k if ok else None)
        taken = {k for k in keys if k is not None}
        out: list[str] = []
        for i, k in enumerate(keys):
            if k is None:
                k = str(i)
                while k in taken:
                    k = f"{k}_"
                taken.add(k)
                if wanted[i] is not None:
                    self.warn(
                        f"{loc}.meta[{i}].key",
                        f"variation key {wanted[i]!r} is not a valid or unique assay key; "
                        f"using {k!r}",
                    )
            out.append(k)
        return out

    def _experiment_key(self, gb_key: str, feature: str, loc: str) -> str:
        candidates = [gb_key, _key_like(gb_key), _key_like(f"{gb_key}.{feature}")]
        key = next((c for c in candidates if _KEY.match(c) and c not in self.experiment_keys), None)
        if key is None:
            base = _key_like(f"{gb_key}.{feature}")[:120]
            n = 2
            while f"{base}-{n}" in self.experiment_keys:
                n += 1
            key = f"{base}-{n}"
        if key != gb_key:
            self.warn(
                f"{loc}.key",
                f"experiment {gb_key!r} is imported as {key!r} (not a valid or unused assay "
                f"key); its seed stays {gb_key!r}, so assignment is unchanged",
            )
        return key

    def _namespace(self, namespace: Any, loc: str) -> LayerRange | None:
        if namespace is None:
            return None
        if (
            not isinstance(namespace, list)
            or len(namespace) != 3
            or not isinstance(namespace[0], str)
            or not all(_is_number(x) for x in namespace[1:])
        ):
            raise _Skip(f"namespace {namespace!r} is not [id, start, end]; rule skipped")
        ns_id, start, end = namespace[0], float(namespace[1]), float(namespace[2])
        if not _KEY.match(ns_id):
            raise _Skip(
                f"namespace id {ns_id!r} is not a valid assay layer key, and the id is what "
                "hashes into the namespace; rule skipped"
            )
        # Hashes lie in [0, 1), so clamping the range to it includes the same subjects.
        start, end = max(start, 0.0), min(end, 1.0)
        if start >= end:
            raise _Skip(f"namespace range {namespace!r} includes no one; rule skipped")
        return LayerRange(layer=ns_id, start=start, end=end)

    # -- conditions ---------------------------------------------------------------------

    def _condition(self, condition: Any, loc: str) -> dict[str, Any] | None:
        if condition is None or condition == {}:
            return None
        if not isinstance(condition, Mapping):
            raise _Skip(f"condition {condition!r} is not an object; rule skipped")
        if self.segments.keep(condition):
            return dict(condition)
        used: set[str] = set()
        inlined = self._inline(condition, used, frozenset())
        for group in sorted(used):
            self.warn(
                f"{loc}.condition",
                f"saved group {group!r} is inlined: later changes to it in GrowthBook "
                "will not reach assay",
            )
        return inlined

    def _group(self, group_id: Any) -> Any:
        if not isinstance(group_id, str):
            raise _Skip(f"saved group reference {group_id!r} is not an id; rule skipped")
        if group_id not in self.saved_groups:
            return None
        return self.saved_groups[group_id]

    def _list_group(self, group_id: Any, used: set[str]) -> list[Any] | None:
        """The values of a list group; None for a condition group (never a member)."""
        entry = self._group(group_id)
        used.add(str(group_id))
        if entry is None:
            # The SDK treats a group it does not know as empty; so does the import.
            return []
        if isinstance(entry, list):
            return entry
        if (
            isinstance(entry, Mapping)
            and entry.get("type") == "list"
            and isinstance(entry.get("values"), list)
        ):
            return list(entry["values"])
        if isinstance(entry, Mapping) and entry.get("type") == "condition":
            return None
        raise _Skip(f"saved group {group_id!r} is not a list of values; rule skipped")

    def _inline(
        self, condition: Mapping[str, Any], used: set[str], visiting: frozenset[str]
    ) -> dict[str, Any]:
        """``condition`` with every saved-group reference replaced by its content."""
        out: dict[str, Any] = {}
        extra: list[dict[str, Any]] = []
        for key, value in condition.items():
            if key in ("$or", "$nor", "$and") and isinstance(value, list):
                out[key] = [
                    self._inline(c, used, visiting) if isinstance(c, Mapping) else c for c in value
                ]
            elif key == "$not" and isinstance(value, Mapping):
                out[key] = self._inline(value, used, visiting)
            elif key == "$savedGroup":
                extra.append(self._saved_group(value, used, visiting))
            elif key == "$savedGroups":
                raise _Skip("$savedGroups conditions are not imported; rule skipped")
            else:
                out[key] = self._inline_value(value, used, visiting)
        if not extra:
            return out
        parts = [out, *extra] if out else extra
        return parts[0] if len(parts) == 1 else {"$and": parts}

    def _saved_group(
        self, reference: Any, used: set[str], visiting: frozenset[str]
    ) -> dict[str, Any]:
        # The SDK evaluates a malformed reference, a group missing from the payload or in
        # the old bare-list form, a group closing a cycle, and a list group with no
        # attribute as false: so does a condition that never holds.
        if not isinstance(reference, Mapping) or not isinstance(reference.get("id"), str):
            return dict(_NEVER)
        group_id = reference["id"]
        entry = self._group(group_id)
        if not isinstance(entry, Mapping) or group_id in visiting:
            return dict(_NEVER)
        used.add(str(group_id))
        if entry.get("type") == "list":
            attribute = reference.get("attributeKey", entry.get("attributeKey"))
            if not isinstance(attribute, str) or not isinstance(entry.get("values"), list):
                return dict(_NEVER)
            return {attribute: {"$in": self._list_group(group_id, used)}}
        if entry.get("type") == "condition" and isinstance(entry.get("condition"), Mapping):
            return self._inline(entry["condition"], used, visiting | {str(group_id)})
        raise _Skip(f"saved group {group_id!r} has an unknown type; rule skipped")

    def _inline_value(self, value: Any, used: set[str], visiting: frozenset[str]) -> Any:
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and k.startswith("$") for k in value
        ):
            return value  # a literal, compared as is
        out: dict[str, Any] = {}
        for op, argument in value.items():
            if op in ("$inGroup", "$notInGroup"):
                # $in/$nin test membership exactly as $inGroup/$notInGroup do; on a
                # condition group both are false in the SDK, as $in: [] is.
                target = "$in" if op == "$inGroup" else "$nin"
                values = self._list_group(argument, used)
                if values is None:
                    target, values = "$in", []
                if target in value or target in out:
                    raise _Skip(f"{op} beside {target} cannot be inlined; rule skipped")
                out[target] = values
            elif op in ("$not", "$size"):
                out[op] = self._inline_value(argument, used, visiting)
            elif op == "$elemMatch" and isinstance(argument, Mapping):
                is_operators = all(isinstance(k, str) and k.startswith("$") for k in argument)
                out[op] = (
                    self._inline_value(argument, used, visiting)
                    if is_operators
                    else self._inline(argument, used, visiting)
                )
            else:
                out[op] = argument
        return out
