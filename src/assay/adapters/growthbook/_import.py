"""Import a GrowthBook SDK features payload as assay definitions, keeping every subject's
value and variant.

The input is what GrowthBook serves SDKs (``GET /api/features/<clientKey>``)::

    {"status": 200, "features": {"key": {"defaultValue": ..., "rules": [...]}},
     "savedGroups": {...}, "dateUpdated": "..."}

or the bare ``features`` object. Each feature becomes a flag (type from its values), each
rule becomes a rule of the same kind in the same order:

- ``force`` without ``coverage``/``range``: a ``force`` rule.
- ``force`` with ``coverage`` or ``range``: a ``rollout`` rule (``range`` kept as such).
- ``variations``: a RUNNING experiment (key, variations, weights, coverage, explicit
  ``ranges``, seed, hash version and attribute, fallback attribute, condition, ``filters``,
  namespace as a layer range, variant keys, names and passthrough from ``meta``) and an
  ``experiment`` rule pointing at it.
- ``parentConditions`` and ``filters`` on any rule: the rule's parent conditions and
  filters (an experiment rule's filters go to its experiment).

Where GrowthBook's semantics differ from assay's, the import translates rather than copies,
so that decide answers what the GrowthBook SDK answers for the same payload:

- GrowthBook defaults ``hashVersion`` to 1 (assay to 2): a missing one is written as 1.
- A rollout includes hash ``n < coverage`` in GrowthBook and ``n <= coverage`` in assay.
  Hashes are multiples of 1/1000 (v1) or 1/10000 (v2), so a coverage lying exactly on such a
  multiple is moved half a step down, where both comparisons agree (0.5 -> 0.49995 for v2).
- Experiment weights GrowthBook would reject (wrong count, not summing to ~1) are replaced by
  equal weights, as the SDK does at bucketing time.
- Explicit ranges are made disjoint as GrowthBook's first match reads them, one per
  variation.
- GrowthBook hashes with an experiment's ``fallbackAttribute`` only under sticky bucketing:
  it is kept with ``fallback_sticky_only``, which assay honours the same way (the fallback
  counts only for a sticky experiment).
- Sticky bucketing: an experiment rule carrying ``bucketVersion`` or ``minBucketVersion``
  (GrowthBook sends them when sticky bucketing is on), unless ``disableStickyBucketing``,
  becomes a sticky experiment with those versions.
- A namespace that is not a valid layer key, or overlaps another imported experiment's
  range of it, becomes the hash filter it is equivalent to.
- Saved groups (the payload's ``savedGroups``) referenced by ``$inGroup``/``$notInGroup``/
  ``$savedGroup`` become segments of the same key, and the conditions keep their references
  (``assay.adapters.growthbook._segments``). A reference assay cannot keep exactly is inlined
  instead (a group missing from the payload is empty, as in the SDK).
- Keys assay cannot take as they are (an experiment key with spaces, one experiment key used
  by two features) get a new assay key, and the original key is kept as the hashing seed.
- A rule that applies to no one in GrowthBook (an unknown hash version, fewer than two
  variations, a filter with no range) is left out, or kept for its parent conditions.

Only what a server cannot honour is reported, as a warning naming its location
(``features.checkout.rules[2]``); a rule whose audience or assignment would change
(bandits, ``$savedGroups``, a second experiment on one flag, ranges a variation would own
in two pieces) is skipped as a whole. Things that do not change a stateless evaluation
(sticky-bucketing versions, ``phase``, ``tracks``) are imported without and reported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from assay.adapters.growthbook._segments import SavedGroupSegments
from assay.adapters.growthbook._values import (
    NeverApplies,
    Skip,
    clamped_range,
    explicit_ranges,
    hash_version,
    is_number,
    js_truthy,
    rollout_coverage,
    sticky_bucketing,
    valid_weights,
    value_flag_type,
)
from assay.engine._definitions import (
    ConditionValidator,
    Definitions,
    ExperimentDefinition,
    LoadReport,
    load_definitions,
)
from assay.engine._errors import ValidationFailed
from assay.engine._model import (
    ApiKey,
    ExperimentRule,
    ExperimentStatus,
    FlagSpec,
    FlagType,
    ForceRule,
    HashFilter,
    LayerRange,
    LayerSpec,
    ParentCondition,
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
        self.flag_keys: dict[str, str] = {}
        """GrowthBook feature key -> assay flag key (they differ only for a feature whose
        key assay cannot take but another feature reads as a parent, e.g. a GrowthBook
        holdout, ``$holdout:...``)."""
        self.holdouts: dict[str, bool] = {}
        """Experiment key -> whether it has a passthrough variant (a holdout, which does
        not count as the flag's one running experiment)."""
        self.segments = SavedGroupSegments({})

    def warn(self, location: str, message: str) -> None:
        self.warnings.append(ImportWarning(location=location, message=message))

    # -- payload ------------------------------------------------------------------------

    def run(self) -> GrowthBookImport:
        features = self._features()
        self.flag_keys = self._flag_keys(features)
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

    @staticmethod
    def _flag_keys(features: Mapping[str, Any]) -> dict[str, str]:
        keys = {str(k): str(k) for k in features if _KEY.match(str(k))}
        parents: set[str] = set()
        for feature in features.values():
            rules = feature.get("rules") if isinstance(feature, Mapping) else None
            for rule in rules if isinstance(rules, list) else []:
                pcs = rule.get("parentConditions") if isinstance(rule, Mapping) else None
                for pc in pcs if isinstance(pcs, list) else []:
                    if isinstance(pc, Mapping) and isinstance(pc.get("id"), str):
                        parents.add(pc["id"])
        taken = set(keys.values())
        # GrowthBook's holdouts are features only ever read as parents. A parent that is
        # not a feature of the payload reads null; one whose key assay cannot take gets a
        # key no flag has, so it stays missing.
        holdouts = {str(k) for k in features if str(k).startswith("$holdout:")}
        for k in sorted(k for k in (parents | holdouts) - set(keys) if not _KEY.match(k)):
            base = _key_like(k) if k in features else _key_like("missing." + k)
            new = base
            while new in taken:
                new = f"{new}_"
            keys[k] = new
            taken.add(new)
        return keys

    def _feature(self, gb_key: str, feature: Any) -> None:
        loc = f"features.{gb_key}"
        key = self.flag_keys.get(gb_key)
        if key is None:
            self.warn(
                loc,
                "feature key is not a valid assay flag key (letters, digits, '_', '.', '-'); "
                "feature not imported",
            )
            return
        if key != gb_key and not gb_key.startswith("$holdout:"):
            self.warn(
                loc,
                f"imported as flag {key!r} (not a valid assay key), so that the features "
                "reading it as a parent keep their rules; callers decide it by that key",
            )
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
                    raise Skip("a rule must be an object; rule skipped")
                converted, rule_values = self._rule(gb_key, rule, rloc, has_experiment)
            except NeverApplies:
                # Dropping a rule that applies to no one changes nothing, unless its
                # parent conditions can end the evaluation (a gate, a cycle): then it is
                # kept with those alone, and a condition no subject passes.
                try:
                    parents = self._parents(rule, rloc)
                except Skip as skip:
                    self.warn(rloc, str(skip))
                    continue
                if not parents:
                    continue
                converted = ForceRule(
                    condition={"$not": {}}, value=default, parent_conditions=parents
                )
                rule_values = []
            except Skip as skip:
                self.warn(rloc, str(skip))
                continue
            rule_id = rule.get("id")
            if isinstance(rule_id, str) and _KEY.match(rule_id) and rule_id not in rule_ids:
                rule_ids.add(rule_id)
                converted = msgspec.structs.replace(converted, id=rule_id)
            elif rule_id is not None:
                self.warn(f"{rloc}.id", f"rule id {rule_id!r} is not a valid or unique key")
            if isinstance(converted, ExperimentRule) and not self.holdouts.get(
                converted.experiment
            ):
                has_experiment = converted.experiment
            rules.append(converted)
            values.extend(rule_values)
        flag_type = value_flag_type(default)
        if any(value_flag_type(v) is not flag_type for v in values):
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
        parents = self._parents(rule, loc)
        filters = self._filters(rule.get("filters"), loc)
        condition = self._condition(rule.get("condition"), loc)
        used = {"id", "condition", "parentConditions", "filters"}
        if rule.get("force") is not None:
            converted: Rule
            if rule.get("coverage") is None and rule.get("range") is None:
                converted = ForceRule(
                    condition=condition,
                    value=rule["force"],
                    filters=filters,
                    parent_conditions=parents,
                )
                # GrowthBook ignores hashing fields on a rule that does not hash.
                used |= {"force", "hashAttribute", "fallbackAttribute", "seed", "hashVersion"}
            else:
                converted = self._rollout(rule, condition, filters, parents)
                if converted.seed is None and self.flag_keys.get(feature) != feature:
                    # GrowthBook seeds with the feature key: keep it under the new key.
                    converted = msgspec.structs.replace(converted, seed=feature)
                used |= {"force", "coverage", "range", "hashAttribute", "fallbackAttribute"}
                used |= {"seed", "hashVersion"}
            used |= {"namespace", "disableStickyBucketing"}  # not read by a force rule
            self._report_unused(rule, used, loc)
            return converted, [rule["force"]]
        if rule.get("contextualVariations") is not None or rule.get("contextualBanditRef"):
            raise Skip("contextual bandits are not imported; rule skipped")
        if rule.get("variations") is None:
            raise NeverApplies
        experiment = self._experiment(feature, rule, condition, filters, loc)
        is_holdout = any(v.passthrough for v in experiment.variants)
        if has_experiment is not None and not is_holdout:
            raise Skip(
                f"this flag already runs experiment {has_experiment!r} and assay allows one "
                "running experiment per flag (besides holdouts); rule skipped"
            )
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
        self.holdouts[experiment.key] = is_holdout
        if experiment.layer is not None:
            r = experiment.layer
            self.layer_ranges.setdefault(r.layer, []).append((r.start, r.end, experiment.key))
            self.layers.setdefault(
                r.layer, LayerSpec(key=r.layer, description="GrowthBook namespace.")
            )
        return (
            ExperimentRule(experiment=experiment.key, parent_conditions=parents),
            [v.value for v in experiment.variants],
        )

    def _parents(self, rule: Mapping[str, Any], loc: str) -> list[ParentCondition]:
        """``parentConditions`` as assay parent conditions (GrowthBook's ``evalPrereqs``:
        an entry without an id is passed over; one without a condition still decides its
        parent, which matters only to end a cycle)."""
        raw = rule.get("parentConditions")
        if not raw:
            return []
        if not isinstance(raw, list):
            raise Skip(f"parentConditions {raw!r} is not a list; rule skipped")
        out = []
        for j, pc in enumerate(raw):
            if not isinstance(pc, Mapping):
                raise Skip(f"parentConditions[{j}] is not an object; rule skipped")
            parent = pc.get("id")
            if parent is None:
                continue
            if not isinstance(parent, str):
                raise Skip(f"parent feature {parent!r} is not a key; rule skipped")
            parent = self.flag_keys.get(parent, parent)
            condition = pc.get("condition")
            inlined = (
                {} if condition is None else self._condition(condition, f"{loc}.parentConditions")
            )
            out.append(
                ParentCondition(
                    flag=parent, condition=inlined or {}, gate=js_truthy(pc.get("gate"))
                )
            )
        return out

    def _filters(self, raw: Any, loc: str) -> list[HashFilter]:
        """GrowthBook's ``filters``; raises ``NeverApplies`` for a filter no one passes."""
        if not raw:
            return []
        if not isinstance(raw, list):
            raise Skip(f"filters {raw!r} is not a list; rule skipped")
        out = []
        for j, f in enumerate(raw):
            if not isinstance(f, Mapping):
                raise Skip(f"filters[{j}] is not an object; rule skipped")
            attribute = f.get("attribute", "id")
            attribute = "id" if attribute is None else attribute
            seed = f.get("seed", "")
            version = f.get("hashVersion", 2)
            if not isinstance(attribute, str) or not isinstance(seed, str):
                raise Skip(f"filters[{j}] has a non-string attribute or seed; rule skipped")
            if attribute == "":
                raise NeverApplies  # no subject has a hash value for ""
            if isinstance(version, bool) or version not in (1, 2):
                raise NeverApplies  # GrowthBook filters out every subject
            ranges = [r for r in map(clamped_range, f.get("ranges") or []) if r is not None]
            if not ranges:
                raise NeverApplies
            out.append(
                HashFilter(
                    attribute=attribute,
                    seed=seed,
                    hash_version=2 if version == 2 else 1,
                    ranges=ranges,
                )
            )
        return out

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

    def _rollout(
        self,
        rule: Mapping[str, Any],
        condition: dict[str, Any] | None,
        filters: list[HashFilter],
        parents: list[ParentCondition],
    ) -> RolloutRule:
        version = hash_version(rule)
        bounds = rule.get("range")
        hashed: tuple[float, float] | None = None
        share = 1.0
        if bounds is not None:
            # GrowthBook: a range decides instead of the coverage, ``start <= n < end``.
            hashed = clamped_range(bounds)
            if hashed is None:
                raise NeverApplies
        else:
            coverage = rule.get("coverage")
            if not is_number(coverage):
                raise Skip(f"coverage {coverage!r} is not a number; rule skipped")
            share = rollout_coverage(float(coverage), version)
        return RolloutRule(
            condition=condition,
            coverage=share,
            range=hashed,
            value=rule["force"],
            hash_attribute=self._attribute(rule, "hashAttribute") or "id",
            # GrowthBook uses a rollout's fallback attribute as assay does (and drops it,
            # like any rule's, under ``disableStickyBucketing``).
            fallback_attribute=None
            if rule.get("disableStickyBucketing")
            else self._attribute(rule, "fallbackAttribute"),
            seed=self._seed(rule),
            hash_version=2 if version == 2 else 1,
            filters=filters,
            parent_conditions=parents,
        )

    @staticmethod
    def _attribute(rule: Mapping[str, Any], field: str) -> str | None:
        value = rule.get(field)
        if value is None:
            return None
        if not isinstance(value, str):
            raise Skip(f"{field} {value!r} is not a string; rule skipped")
        return value

    @staticmethod
    def _seed(rule: Mapping[str, Any]) -> str | None:
        seed = rule.get("seed")
        if seed is None or seed == "":
            return None  # ``seed || key`` in both
        if not isinstance(seed, str):
            raise Skip(f"seed {seed!r} is not a string; rule skipped")
        return seed

    def _experiment(
        self,
        feature: str,
        rule: Mapping[str, Any],
        condition: dict[str, Any] | None,
        filters: list[HashFilter],
        loc: str,
    ) -> ExperimentDefinition:
        variations = rule["variations"]
        if not isinstance(variations, list) or len(variations) < 2:
            raise NeverApplies  # fewer than two variations assign no one
        n = len(variations)
        version = hash_version(rule)
        gb_key = rule.get("key") or feature
        if not isinstance(gb_key, str):
            raise Skip(f"experiment key {gb_key!r} is not a string; rule skipped")
        seed = self._seed(rule) or gb_key

        coverage = rule.get("coverage")
        if coverage is None:
            coverage = 1
        if not is_number(coverage):
            raise Skip(f"coverage {coverage!r} is not a number; rule skipped")
        coverage = min(max(float(coverage), 0.0), 1.0)  # getBucketRanges clamps the same way
        # GrowthBook buckets with equal weights when the given ones are unusable.
        weights = rule.get("weights")
        shares = [float(w) for w in weights] if valid_weights(weights, n) else [1 / n] * n
        # Explicit ranges (a non-empty list) decide instead of coverage and weights.
        ranges = explicit_ranges(rule["ranges"], n) if rule.get("ranges") else None

        meta = rule.get("meta")
        if meta is not None and not isinstance(meta, list):
            self.warn(f"{loc}.meta", "meta is not a list; variant keys are their indexes")
            meta = None
        metas: list[Mapping[str, Any]] = []
        for i in range(n):
            m = meta[i] if meta is not None and i < len(meta) else None
            metas.append(m if isinstance(m, Mapping) else {})
        keys = self._variant_keys([m.get("key") for m in metas], loc)
        variants = [
            Variant(
                key=keys[i],
                value=value,
                weight=shares[i],
                name=m["name"][:_NAME_MAX] if isinstance(m.get("name"), str) else "",
                passthrough=js_truthy(m.get("passthrough")),
            )
            for i, (value, m) in enumerate(zip(variations, metas, strict=True))
        ]

        hash_attribute = self._attribute(rule, "hashAttribute") or "id"
        layer = None
        if not filters:  # GrowthBook ignores the namespace of an experiment with filters
            layer, filters = self._namespace(rule.get("namespace"), hash_attribute)
        fallback = None
        if not rule.get("disableStickyBucketing"):
            fallback = self._attribute(rule, "fallbackAttribute") or None
        try:
            sticky = sticky_bucketing(rule, loc, self.warn)
        except ValueError as exc:
            raise Skip(str(exc)) from None

        key = self._experiment_key(gb_key, feature, loc)
        if layer is not None:
            for start, end, _other in self.layer_ranges.get(layer.layer, []):
                if start < layer.end and layer.start < end:
                    # assay refuses overlapping running experiments in a layer; the same
                    # namespace as a filter includes the same subjects.
                    filters = self._namespace_filter(layer, hash_attribute)
                    layer = None
                    break
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
            hash_attribute=hash_attribute,
            fallback_attribute=fallback,
            # GrowthBook hashes with it only under sticky bucketing.
            fallback_sticky_only=fallback is not None,
            condition=condition,
            layer=layer,
            ranges=ranges,
            filters=filters,
            status=ExperimentStatus.RUNNING,
            **(sticky or {}),
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

    def _namespace(
        self, namespace: Any, hash_attribute: str
    ) -> tuple[LayerRange | None, list[HashFilter]]:
        """A namespace as a layer range, or, when its id is not a valid layer key, as the
        filter it is equivalent to."""
        if namespace is None:
            return None, []
        if (
            not isinstance(namespace, list)
            or len(namespace) != 3
            or not isinstance(namespace[0], str)
            or not all(is_number(x) for x in namespace[1:])
        ):
            raise Skip(f"namespace {namespace!r} is not [id, start, end]; rule skipped")
        ns_id, start, end = namespace[0], float(namespace[1]), float(namespace[2])
        # Hashes lie in [0, 1), so clamping the range to it includes the same subjects.
        start, end = max(start, 0.0), min(end, 1.0)
        if start >= end:
            raise NeverApplies
        layer = LayerRange(layer=ns_id, start=start, end=end) if _KEY.match(ns_id) else None
        if layer is None:
            return None, self._namespace_filter((ns_id, start, end), hash_attribute)
        return layer, []

    @staticmethod
    def _namespace_filter(
        namespace: LayerRange | tuple[str, float, float], hash_attribute: str
    ) -> list[HashFilter]:
        # GrowthBook's inNamespace: hash v1 of the hash value with seed "__" + the id.
        if isinstance(namespace, LayerRange):
            namespace = (namespace.layer, namespace.start, namespace.end)
        ns_id, start, end = namespace
        return [
            HashFilter(
                attribute=hash_attribute, seed="__" + ns_id, hash_version=1, ranges=[(start, end)]
            )
        ]

    # -- conditions ---------------------------------------------------------------------

    def _condition(self, condition: Any, loc: str) -> dict[str, Any] | None:
        if condition is None or condition == {}:
            return None
        if not isinstance(condition, Mapping):
            raise Skip(f"condition {condition!r} is not an object; rule skipped")
        if self.segments.keep(condition):
            return dict(condition)
        inlined, used = self.segments.inline(condition)
        for group in used:
            self.warn(
                f"{loc}.condition",
                f"saved group {group!r} is inlined: later changes to it in GrowthBook "
                "will not reach assay",
            )
        return inlined
