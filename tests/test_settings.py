"""The one settings object: defaults < TOML file < ONCOPACS_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from oncopacs.errors import ConfigError
from oncopacs.settings import RemoteAE, Settings


def test_defaults_follow_the_interface_contract():
    settings = Settings.load(env={})
    assert (settings.http_port, settings.dicom_port, settings.ae_title) == (8042, 11112, "ONCOPACS")
    assert settings.effective_database_url.startswith("sqlite:///") and settings.remote_aes == ()


def test_environment_wins_over_file(tmp_path: Path):
    config = tmp_path / "oncopacs.toml"
    config.write_text('http_port = 9000\nae_title = "FROMFILE"\nremote_aes = ["PACS@10.0.0.5:104"]\n')
    env = {"ONCOPACS_HTTP_PORT": "9100", "ONCOPACS_DATA_DIR": str(tmp_path / "d"),
           "ONCOPACS_DATABASE_URL": "postgresql+psycopg://u@h/db"}
    settings = Settings.load(env=env, config_file=config)
    assert settings.http_port == 9100 and settings.ae_title == "FROMFILE"
    assert settings.remote_aes == (RemoteAE("PACS", "10.0.0.5", 104),)
    assert settings.data_dir == tmp_path / "d" and settings.effective_database_url == "postgresql+psycopg://u@h/db"


def test_config_file_from_environment(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text("dicom_port = 4242\n")
    assert Settings.load(env={"ONCOPACS_CONFIG": str(config)}).dicom_port == 4242


def test_remote_aes_list():
    settings = Settings.load(env={"ONCOPACS_REMOTE_AES": "A@127.0.0.1:104, B@[::1]:11112"})
    assert settings.remote_ae("B") == RemoteAE("B", "::1", 11112) and settings.remote_ae("C") is None


@pytest.mark.parametrize(
    ("env", "message"),
    [({"ONCOPACS_HTTP_PORT": "eighty"}, "http_port"),
     ({"ONCOPACS_REMOTE_AES": "nohost"}, "AET@host:port"),
     ({"ONCOPACS_AE_TITLE": "A_TITLE_THAT_IS_TOO_LONG"}, "ae_title"),
     ({"ONCOPACS_ALLOW_OVERWRITE": "maybe"}, "boolean")],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str):
    with pytest.raises(ConfigError, match=message):
        Settings.load(env=env)


def test_unknown_or_broken_file(tmp_path: Path):
    unknown = tmp_path / "u.toml"
    unknown.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown keys colour"):
        Settings.load(env={}, config_file=unknown)
    broken = tmp_path / "b.toml"
    broken.write_text("http_port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(env={}, config_file=broken)
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(env={}, config_file=tmp_path / "missing.toml")
