"""Shared fixtures: the real images in ../shared/data and an isolated dxlab home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own DXLAB_HOME, so nothing touches the user's ~/.dxlab."""
    home = tmp_path_factory.mktemp("dxlab-home")
    monkeypatch.setenv("DXLAB_HOME", str(home))
    monkeypatch.delenv("DXLAB_DATA_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # code that talks to MLflow without dxlab's settings must not write ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{home}/mlruns")
    yield home


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip when this checkout has none beside it."""
    root = Path(os.environ.get("DXLAB_SHARED_DATA", SHARED_DATA))
    if not root.is_dir():
        pytest.skip(f"real test images not found at {root} (set DXLAB_SHARED_DATA to their folder)")
    return root


@pytest.fixture
def shared_set(shared_data):
    """A named folder of ../shared/data, or a skip when it is missing."""

    def get(name: str) -> Path:
        path = shared_data / name
        if not path.exists():
            pytest.skip(f"{path} not present")
        return path

    return get
