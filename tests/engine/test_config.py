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
    ("name", "value"),
    [("ASSAY_PORT", "eighty"), ("ASSAY_PORT", "70000"), ("ASSAY_STORE", "mongo")],
)
def test_bad_environment_value_names_the_setting(name: str, value: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        EngineConfig.load(env={name: value})
    assert info.value.code == "invalid_config"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed):
        EngineConfig.load(tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1")
    with pytest.raises(ValidationFailed):
        EngineConfig.load(bad, env={})
