"""Settings: read from the environment lazily, in this one place.

Nothing is read at import time; call :func:`get_settings` where a value is
needed. Every setting has an embedded default so that a fresh machine works
without configuration.

| variable                     | default                              |
|------------------------------|--------------------------------------|
| ``DXLAB_HOME``               | ``~/.dxlab``                         |
| ``DXLAB_DATA_ROOT``          | ``$DXLAB_HOME/data``                 |
| ``DXLAB_MLFLOW_TRACKING_URI``| ``sqlite:///$DXLAB_HOME/mlflow.db``  |
| ``DXLAB_RECORDS_DATABASE_URL``| ``sqlite:///$DXLAB_HOME/records.db``|
| ``DXLAB_DEID_KEY_FILE``      | ``$DXLAB_HOME/deid.key``             |
| ``DXLAB_LOG_LEVEL``          | ``WARNING``                          |
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dxlab.errors import SettingsError

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    home: Path
    data_root: Path
    mlflow_tracking_uri: str
    records_database_url: str
    #: secret for keyed pseudonyms (HMAC-SHA256) in de-identification
    deid_key_file: Path
    log_level: str

    def ensure_home(self) -> Path:
        """Create the home folder (and the data root) when they are missing."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        return self.home


def _path_setting(name: str, default: Path) -> Path:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise SettingsError(f"{name}={raw!r} names a file; expected a folder (it is created when missing)")
    return path.resolve()


def _file_setting(name: str, default: Path) -> Path:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    path = Path(raw).expanduser()
    if path.is_dir():
        raise SettingsError(f"{name}={raw!r} names a folder; expected a file path")
    return path.resolve()


def _url_setting(name: str, default: str) -> str:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if "://" not in raw and not raw.startswith("file:"):
        raise SettingsError(f"{name}={raw!r} is not a URL; expected e.g. 'sqlite:////abs/path.db' or 'postgresql://user@host:5432/db'")
    return raw


def get_settings() -> Settings:
    """Read the settings from the environment now (cheap; never cached)."""
    home = _path_setting("DXLAB_HOME", Path("~/.dxlab").expanduser())
    data_root = _path_setting("DXLAB_DATA_ROOT", home / "data")
    level = os.environ.get("DXLAB_LOG_LEVEL", "WARNING").strip().upper() or "WARNING"
    if level not in _LOG_LEVELS:
        raise SettingsError(f"DXLAB_LOG_LEVEL={level!r} is not a log level; expected one of {', '.join(_LOG_LEVELS)}")
    return Settings(
        home=home,
        data_root=data_root,
        mlflow_tracking_uri=_url_setting("DXLAB_MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
        records_database_url=_url_setting("DXLAB_RECORDS_DATABASE_URL", f"sqlite:///{home / 'records.db'}"),
        deid_key_file=_file_setting("DXLAB_DEID_KEY_FILE", home / "deid.key"),
        log_level=level,
    )


def configure_logging(settings: Settings | None = None) -> None:
    """Set up logging for the CLI (libraries only ever call ``logging.getLogger``)."""
    settings = settings or get_settings()
    logging.basicConfig(level=getattr(logging, settings.log_level), format="%(levelname)s %(name)s: %(message)s")
