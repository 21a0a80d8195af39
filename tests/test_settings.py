from pathlib import Path

import pytest

from dxlab.errors import SettingsError
from dxlab.settings import get_settings


def test_defaults_live_under_home(monkeypatch, tmp_path):
    for var in ("DXLAB_HOME", "DXLAB_DATA_ROOT", "DXLAB_MLFLOW_TRACKING_URI", "DXLAB_RECORDS_DATABASE_URL", "DXLAB_DEID_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    s = get_settings()
    assert s.home == tmp_path / ".dxlab"
    assert s.data_root == tmp_path / ".dxlab" / "data"
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path}/.dxlab/mlflow.db"
    assert s.records_database_url == f"sqlite:///{tmp_path}/.dxlab/records.db"
    assert s.deid_key_file == tmp_path / ".dxlab" / "deid.key"
    assert not (tmp_path / ".dxlab").exists(), "reading settings creates nothing"


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("DXLAB_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("DXLAB_DATA_ROOT", str(tmp_path / "d"))
    monkeypatch.setenv("DXLAB_RECORDS_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    s = get_settings()
    assert s.home == tmp_path / "h" and s.data_root == tmp_path / "d"
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path}/h/mlflow.db"
    assert s.records_database_url.startswith("postgresql://")
    s.ensure_home()
    assert (tmp_path / "h").is_dir() and (tmp_path / "d").is_dir()


@pytest.mark.parametrize("var,value,message", [
    ("DXLAB_MLFLOW_TRACKING_URI", "just-a-name", "is not a URL"),
    ("DXLAB_LOG_LEVEL", "LOUD", "is not a log level"),
])
def test_bad_values_name_the_variable(monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=f"{var}={value!r} {message}"):
        get_settings()


def test_home_that_is_a_file_is_refused(monkeypatch, tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    monkeypatch.setenv("DXLAB_HOME", str(f))
    with pytest.raises(SettingsError, match="names a file; expected a folder"):
        get_settings()
