"""Domain objects: what assay stores and what its API speaks.

Every configuration object carries a ``revision`` that each change bumps, so snapshots,
decision-cache keys and optimistic concurrency can all rely on it. Everything is a frozen
msgspec Struct: cheap to copy, encodable as JSON, and safe to share between actors.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

JSONValue = Any
"""Any JSON value (flag values, variant values, conditions)."""

Key = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$",
        description="A human-chosen identifier: letters, digits, '_', '.', '-'; 1-128 chars.",
    ),
]
Name = Annotated[str, msgspec.Meta(max_length=200)]
Description = Annotated[str, msgspec.Meta(max_length=5000)]
Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Weight = Annotated[float, msgspec.Meta(ge=0.0, le=1e6)]
"""Relative: only ratios matter. Bounded so that no sum of weights overflows."""
Condition = dict[str, Any]
BucketRange = tuple[Share, Share]
"""A half-open range ``[start, end)`` of the hash space [0, 1)."""


class Role(enum.StrEnum):
    ADMIN = "ADMIN"
    DEVELOPER = "DEVELOPER"
    ANALYST = "ANALYST"
    VIEWER = "VIEWER"
    SDK = "SDK"


class FlagType(enum.StrEnum):
    BOOLEAN = "boolean"
    STRING = "string"
    NUMBER = "number"
    JSON = "json"


class ExperimentStatus(enum.StrEnum):
    DRAFT = "DRAFT"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    ARCHIVED = "ARCHIVED"
    ROLLED_BACK = "ROLLED_BACK"


class Transition(enum.StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    COMPLETE = "complete"
    ARCHIVE = "archive"
    ROLLBACK = "rollback"


class Struct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base for every domain and API type: immutable, keyword-only, strict on input."""


# --- projects -------------------------------------------------------------------------


class ProjectSpec(Struct, frozen=True, kw_only=True):
    key: Key
    name: Name = ""
    description: Description = ""


class Project(ProjectSpec, frozen=True, kw_only=True):
    id: str
    archived: bool = False
    revision: int = 1
    created_at: datetime
    updated_at: datetime


# --- flags ----------------------------------------------------------------------------


class Prerequisite(Struct, frozen=True, kw_only=True):
    """The flag applies only when another flag evaluates to ``value`` for the subject."""

    flag: Key
    value: JSONValue = True


class ParentCondition(Struct, frozen=True, kw_only=True):
    """A rule's prerequisite (GrowthBook's ``parentConditions``): ``condition`` is tested
    against ``{"value": <the parent flag's value for the subject>}``.

    When it fails the rule is skipped, or, with ``gate``, the whole flag evaluates to no
    value (``prerequisite_gate``). A parent that does not exist evaluates to null.
    """

    flag: Key
    condition: Condition
    gate: bool = False


class HashFilter(Struct, frozen=True, kw_only=True):
    """A hash-range filter (GrowthBook's ``filters``): the subject passes when
    ``hash(seed, attribute value, hash_version)`` falls in one of ``ranges``.

    A subject without a usable ``attribute`` value does not pass. Several filters on one
    rule must all pass; this is how GrowthBook keeps experiments mutually exclusive across
    more than one namespace.
    """

    attribute: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "id"
    seed: str = ""
    hash_version: Literal[1, 2] = 2
    ranges: Annotated[list[BucketRange], msgspec.Meta(min_length=1, max_length=100)]


class ForceRule(Struct, frozen=True, kw_only=True, tag="force", tag_field="type"):
    """When the condition matches (and the filters and parent conditions pass), serve
    ``value``."""

    id: Key | None = None
    condition: Condition | None = None
    value: JSONValue
    filters: list[HashFilter] = []
    parent_conditions: list[ParentCondition] = []


class RolloutRule(Struct, frozen=True, kw_only=True, tag="rollout", tag_field="type"):
    """When the condition matches and the subject hashes inside ``coverage`` (or inside
    ``range`` when one is given), serve ``value``.

    The subject's hash does not depend on the coverage, so raising it only adds subjects.
    """

    id: Key | None = None
    condition: Condition | None = None
    coverage: Share = 1.0
    range: BucketRange | None = None
    """When set, decides instead of ``coverage``: the subject's hash lies in [start, end)."""
    value: JSONValue
    hash_attribute: str = "id"
    fallback_attribute: str | None = None
    seed: str | None = None
    hash_version: Literal[1, 2] = 2
    filters: list[HashFilter] = []
    parent_conditions: list[ParentCondition] = []


class ExperimentRule(Struct, frozen=True, kw_only=True, tag="experiment", tag_field="type"):
    """A running experiment decides the value through its variants."""

    id: Key | None = None
    experiment: Key
    parent_conditions: list[ParentCondition] = []


Rule = ForceRule | RolloutRule | ExperimentRule


class FlagSpec(Struct, frozen=True, kw_only=True):
    key: Key
    type: FlagType = FlagType.BOOLEAN
    description: Description = ""
    default_value: JSONValue = False
    enabled: bool = True
    prerequisites: list[Prerequisite] = []
    rules: list[Rule] = []


class Flag(FlagSpec, frozen=True, kw_only=True):
    id: str
    project_id: str
    revision: int = 1
    created_at: datetime
    updated_at: datetime


# --- experiments ----------------------------------------------------------------------


class Variant(Struct, frozen=True, kw_only=True):
    key: Key
    value: JSONValue
    weight: Weight = 1.0
    name: Name = ""
    passthrough: bool = False
    """GrowthBook's passthrough variation: a subject bucketed here is in the experiment
    (a holdout's "not held out" group), but the flag goes on to its next rule."""


class ForcedVariation(Struct, frozen=True, kw_only=True):
    """Individual targeting: subjects whose ``attribute`` equals one of ``values`` (JSON
    equality, types kept) get ``variant`` (``forced_variation``), not a hashed bucket."""

    variant: Key
    attribute: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "id"
    values: Annotated[list[str | int | float | bool], msgspec.Meta(max_length=10_000)]


class LayerRange(Struct, frozen=True, kw_only=True):
    """Where an experiment sits in a layer (namespace): the half-open range [start, end)."""

    layer: Key
    start: Share
    end: Share


GuardrailDirection = Literal["increase", "decrease"]
ThresholdType = Literal["relative", "absolute"]
ChannelConfig = dict[str, Any]
"""A notification channel: ``{"type": NAME, ...}`` with the settings its plugin accepts."""


class Guardrail(Struct, frozen=True, kw_only=True):
    """A metric that must not move the harmful way while the experiment runs.

    It is breached when the sequential (always-valid) interval of a treatment's lift over
    control lies entirely beyond ``threshold`` in the harmful direction, with at least
    ``min_sample`` units in both arms: e.g. ``harmful_direction="increase"``,
    ``threshold=0.02`` (relative) reads "errors must not rise by more than 2%". Checked on
    every guardrail interval; the interval stays valid however often it is looked at.
    """

    metric: Key
    harmful_direction: GuardrailDirection
    threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1e12)] = 0.0
    """How far the lift may go in the harmful direction before it counts (a magnitude)."""
    threshold_type: ThresholdType = "relative"
    """``relative``: a share of control's value (0.02 = 2%); ``absolute``: metric units."""
    min_sample: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] = 200
    """Units per variant (control and the treatment compared) before a breach can count."""
    alpha: Annotated[float, msgspec.Meta(gt=0.0, lt=0.5)] = 0.05
    """The false-alarm rate over the whole run, however many checks are made."""
    action: Key = "notify"
    """What a breach does: ``pause``, ``rollback``, ``notify`` (nothing but notifications)
    or an action a plugin registers."""
    channels: Annotated[list[ChannelConfig], msgspec.Meta(max_length=20)] = []
    """Where notifications go, e.g. ``{"type": "webhook", "url": ..., "secret": ...}``;
    none means the ``log`` channel."""


class ExperimentPlan(Struct, frozen=True, kw_only=True):
    """What an experiment was planned for (``assay plan`` computes it). With a plan, the
    report judges the primary metrics by a group-sequential test over the plan's
    information fraction (docs/reports.md): analysed subjects over
    ``subjects_per_variant`` times the variants, or, without it, days since the start
    over ``days``."""

    subjects_per_variant: int | None = None
    days: float | None = None
    mde: float | None = None
    """The primary metrics' minimum detectable effect, relative (0.05 = +5%): recorded
    with the plan, shown in the report."""
    power: float = 0.8


class ExperimentSpec(Struct, frozen=True, kw_only=True):
    key: Key
    name: Name = ""
    description: Description = ""
    hypothesis: Description = ""
    variants: list[Variant] = []
    coverage: Share = 1.0
    seed: str | None = None
    hash_version: Literal[1, 2] = 2
    hash_attribute: str = "id"
    fallback_attribute: str | None = None
    fallback_sticky_only: bool = False
    """GrowthBook's rule: the fallback attribute serves sticky bucketing only and never
    hashes a stateless assignment (set by the GrowthBook import). False: assay's own rule,
    the fallback hashes whenever the hash attribute is missing."""
    condition: Condition | None = None
    layer: LayerRange | None = None
    ranges: list[BucketRange] | None = None
    """Explicit bucket ranges, one per variant (GrowthBook's ``ranges``): when set, they
    decide instead of coverage and weights, and may leave gaps or not start at 0."""
    filters: list[HashFilter] = []
    """Hash-range filters the subject must pass (GrowthBook's ``filters``), checked with
    the layer (the import drops a namespace beside filters, as GrowthBook ignores it)."""
    forced_variations: list[ForcedVariation] = []
    participation_limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    holdout: Key | None = None
    is_holdout: bool = False
    primary_metrics: list[Key] = []
    secondary_metrics: list[Key] = []
    guardrail_metrics: list[Key] = []
    guardrails: list[Guardrail] = []
    log_exposures_on_assignment: bool = False
    correction: Literal["holm", "benjamini-hochberg", "none"] = "holm"
    plan: ExperimentPlan | None = None
    sticky_bucketing: bool = False
    """Keep each subject in the variant it first got, whatever weights, coverage or
    targeting do later (GrowthBook's sticky bucketing; see docs/design.md)."""
    bucket_version: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Raise it to re-bucket everyone: assignments are kept per version."""
    min_bucket_version: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Subjects assigned under an older version are kept out of the experiment."""


class Experiment(ExperimentSpec, frozen=True, kw_only=True):
    id: str
    project_id: str
    status: ExperimentStatus = ExperimentStatus.DRAFT
    started_at: datetime | None = None
    ended_at: datetime | None = None
    revision: int = 1
    created_at: datetime
    updated_at: datetime

    @property
    def effective_seed(self) -> str:
        return self.seed if self.seed is not None else self.key


# --- layers and metrics ---------------------------------------------------------------


class LayerSpec(Struct, frozen=True, kw_only=True):
    """A namespace for mutually exclusive experiments; each takes a [start, end) range."""

    key: Key
    name: Name = ""
    description: Description = ""


class Layer(LayerSpec, frozen=True, kw_only=True):
    id: str
    project_id: str
    revision: int = 1
    created_at: datetime
    updated_at: datetime


class MetricSpec(Struct, frozen=True, kw_only=True):
    key: Key
    name: Name = ""
    description: Description = ""
    kind: Key = "proportion"
    higher_is_better: bool = True
    requires_exposure: bool = True
    attribution_window_hours: Annotated[int, msgspec.Meta(ge=1, le=24 * 3650)] | None = None
    """Hours after a subject's first exposure in which its conversions count (1 to ten
    years); none: until the experiment ends."""
    pending_ttl_hours: Annotated[int, msgspec.Meta(ge=1, le=24 * 365)] = 168
    numerator: Key | None = None
    denominator: Key | None = None
    percentile: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] | None = None
    # CUPED: the same metric's conversions in the N days before each subject's first
    # exposure are the covariate (proportion, count and mean kinds). None: no adjustment.
    cuped_days: Annotated[int, msgspec.Meta(ge=1, le=365)] | None = None


class Metric(MetricSpec, frozen=True, kw_only=True):
    id: str
    project_id: str
    revision: int = 1
    created_at: datetime
    updated_at: datetime


# --- segments -------------------------------------------------------------------------


SegmentType = Literal["list", "condition"]


class SegmentSpec(Struct, frozen=True, kw_only=True):
    """A named audience, per project (GrowthBook's saved group, LaunchDarkly's segment).

    A ``list`` segment is a list of values of one attribute (``attribute``, default ``id``);
    a condition tests membership with ``{"country": {"$inGroup": "KEY"}}`` (any attribute,
    as in GrowthBook) or ``{"$savedGroup": {"id": "KEY"}}`` (its own ``attribute``). A
    ``condition`` segment is a named condition, used through ``{"$savedGroup": {"id":
    "KEY"}}``. Conditions reach segments by key, so changing a segment changes every rule
    that uses it, with one audit entry. See docs/definitions.md.
    """

    key: Key
    name: Name = ""
    description: Description = ""
    type: SegmentType = "list"
    attribute: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "id"
    """The attribute a ``list`` segment's values are ids of (GrowthBook's ``attributeKey``)."""
    values: Annotated[list[JSONValue], msgspec.Meta(max_length=100_000)] = []
    """A ``list`` segment's members."""
    condition: Condition | None = None
    """A ``condition`` segment's condition."""


class Segment(SegmentSpec, frozen=True, kw_only=True):
    id: str
    project_id: str
    revision: int = 1
    created_at: datetime
    updated_at: datetime


# --- access ---------------------------------------------------------------------------


class ApiKey(Struct, frozen=True, kw_only=True):
    """An API key as stored: the secret itself is never kept, only its SHA-256 digest."""

    id: str
    name: Name = ""
    role: Role
    project_id: str | None = None
    prefix: str
    secret_hash: str
    created_at: datetime
    created_by: str | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


# --- SDK connections ------------------------------------------------------------------


EvaluationMode = Literal["local", "remote"]


class SdkConnectionSpec(Struct, frozen=True, kw_only=True):
    """What a person chooses about an SDK connection (GrowthBook's SDK protocol,
    docs/sdk.md). ``name`` identifies it among the project's active connections (a
    definitions file refers to it by name)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "default"
    encrypt: bool = False
    """Serve the payload encrypted (GrowthBook's AES-CBC) with the connection's
    ``decryption_key``."""
    evaluation: EvaluationMode = "local"
    """``local``: SDKs download the payload and decide themselves; ``remote``: they post
    attributes to ``/api/eval/{clientKey}`` and get the evaluated flags back."""
    allow_exposures: bool = False
    """Accept exposures sent with the client key to ``/api/events/{clientKey}``."""


class SdkConnection(SdkConnectionSpec, frozen=True, kw_only=True):
    """A connection as stored. The client key is public (it ships in web pages and apps):
    it reads this connection's payload and, when allowed, sends exposures; nothing else."""

    id: str
    project_id: str
    client_key: str
    decryption_key: str | None = None
    """Base64 of a random 128-bit AES key while ``encrypt`` is on (what GrowthBook's SDKs
    take as ``decryptionKey``)."""
    revision: int = 1
    created_at: datetime
    updated_at: datetime
    created_by: str | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class AuditEntry(Struct, frozen=True, kw_only=True):
    id: int = 0
    project_id: str | None
    actor: str
    at: datetime
    action: str
    resource_kind: str
    resource_id: str
    resource_key: str
    before: JSONValue = None
    after: JSONValue = None


ConfigObject = Project | Flag | Experiment | Layer | Metric | Segment
ProjectScoped = Flag | Experiment | Layer | Metric | Segment
