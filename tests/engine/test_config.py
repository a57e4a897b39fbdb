from __future__ import annotations

from pathlib import Path

import pytest

from assay.engine import EngineConfig, ValidationFailed


def test_defaults() -> None:
    config = EngineConfig.load(env={})
    assert config.store == "postgres"
    assert config.database_url is None
    assert config.port == 8000
    assert config.decision_records == "async"


def test_layers_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "assay.toml"
    path.write_text('port = 9000\nhost = "0.0.0.0"\nworkers = 3\n')
    env = {"ASSAY_PORT": "9100", "ASSAY_DATABASE_URL": "postgresql://db/assay"}
    config = EngineConfig.load(path, env=env, overrides={"workers": 2, "host": None})
    assert config.port == 9100  # env beats file, converted from text
    assert config.host == "0.0.0.0"  # None override leaves the lower layer alone
    assert config.workers == 2
    assert config.database_url == "postgresql://db/assay"


def test_unknown_setting_in_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "assay.toml"
    path.write_text("prot = 9000\n")
    with pytest.raises(ValidationFailed) as info:
        EngineConfig.load(path, env={})
    assert info.value.code == "invalid_config"
    assert "prot" in info.value.message


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ASSAY_PORT", "abc", "ASSAY_PORT: expected an integer, got 'abc'"),
        ("ASSAY_PORT", "70000", "ASSAY_PORT: expected an integer from 0 to 65535, got '70000'"),
        ("ASSAY_WORKERS", "0", "ASSAY_WORKERS: expected an integer >= 1, got '0'"),
        ("ASSAY_STORE", "mongo", "ASSAY_STORE: expected one of memory, postgres, got 'mongo'"),
        (
            "ASSAY_GUARDRAIL_SRM_P_VALUE",
            "2",
            "ASSAY_GUARDRAIL_SRM_P_VALUE: expected a number > 0 and < 1, got '2'",
        ),
        ("ASSAY_EVENT_MAX_AGE_DAYS", "soon", "ASSAY_EVENT_MAX_AGE_DAYS: expected a number, got"),
    ],
)
def test_bad_environment_value_names_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        EngineConfig.load(env={name: value})
    assert info.value.code == "invalid_config"
    assert info.value.message.startswith(message)


def test_a_bad_value_is_named_where_it_was_given(tmp_path: Path) -> None:
    path = tmp_path / "assay.toml"
    path.write_text('port = "eighty"\n')
    with pytest.raises(ValidationFailed) as info:
        # Checked although the override would replace it.
        EngineConfig.load(path, env={}, overrides={"port": 8080})
    assert info.value.message == f"config file {path}: port: expected an integer, got 'eighty'"
    with pytest.raises(ValidationFailed) as info:
        EngineConfig.load(env={}, overrides={"port": 99999})
    assert info.value.message == "--port: expected an integer from 0 to 65535, got 99999"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed):
        EngineConfig.load(tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1")
    with pytest.raises(ValidationFailed):
        EngineConfig.load(bad, env={})
