"""Retention settings: defaults, and settings that would break a guarantee refused with a
message naming the setting."""

from __future__ import annotations

import pytest

from assay.engine import EngineConfig, ValidationFailed


def test_defaults_keep_event_ids_as_long_as_events_are_accepted() -> None:
    config = EngineConfig.load(env={})
    assert config.decision_record_retention_days == 30
    assert config.audit_retention_days is None  # forever
    # 30 days of accepted age plus 300 s of skew: 31 whole days.
    assert config.event_id_retention == 31
    shorter = EngineConfig.load(env={"ASSAY_EVENT_MAX_AGE_DAYS": "2.5"})
    assert shorter.event_id_retention == 3
    # Raw events of an ended experiment: 90 days, or longer when events are accepted
    # longer after their timestamp.
    assert config.raw_event_retention == 90
    assert shorter.raw_event_retention == 90
    longer = EngineConfig.load(env={"ASSAY_EVENT_MAX_AGE_DAYS": "120"})
    assert longer.raw_event_retention == 121


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("decision_record_retention_days", "0"),
        ("decision_record_retention_days", "-3"),
        ("event_id_retention_days", "0"),
        ("audit_retention_days", "-1"),
        ("raw_event_retention_days", "0"),
        ("raw_event_retention_days", "-90"),
        ("retention_interval_seconds", "0"),
    ],
)
def test_zero_or_negative_periods_are_refused_naming_the_setting(setting: str, value: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        EngineConfig.load(env={f"ASSAY_{setting.upper()}": value})
    assert info.value.code == "invalid_config"
    # Named as it was given: the environment variable of the setting.
    assert f"ASSAY_{setting.upper()}:" in info.value.message


def test_event_ids_kept_shorter_than_events_are_accepted_is_refused() -> None:
    # 30 days exactly is not enough: an event may also be 300 s in the future.
    with pytest.raises(ValidationFailed) as info:
        EngineConfig.load(env={"ASSAY_EVENT_ID_RETENTION_DAYS": "30"})
    assert info.value.code == "invalid_config"
    assert "event_id_retention_days" in info.value.message
    assert "event_max_age_days" in info.value.message
    with pytest.raises(ValueError, match="event_id_retention_days"):
        EngineConfig(event_id_retention_days=5, event_max_age_days=7)
    config = EngineConfig.load(env={"ASSAY_EVENT_ID_RETENTION_DAYS": "31"})
    assert config.event_id_retention == 31
    assert EngineConfig(event_id_retention_days=1, event_max_age_days=0.5).event_id_retention == 1


def test_raw_events_kept_shorter_than_events_are_accepted_is_refused() -> None:
    # Compacting sooner would refuse late events of the experiment ingestion accepts.
    with pytest.raises(ValidationFailed) as info:
        EngineConfig.load(env={"ASSAY_RAW_EVENT_RETENTION_DAYS": "30"})
    assert info.value.code == "invalid_config"
    assert "raw_event_retention_days (30)" in info.value.message
    assert "event_max_age_days" in info.value.message
    config = EngineConfig.load(env={"ASSAY_RAW_EVENT_RETENTION_DAYS": "31"})
    assert config.raw_event_retention == 31
