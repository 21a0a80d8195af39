"""benchmarks/quality.py refuses bad input with a clear message instead of a traceback."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture()
def quality(monkeypatch, tmp_path):
    monkeypatch.setenv("DXLAB_HOME", str(tmp_path / "home"))  # the benchmark points DXLAB_HOME at its temporary store
    spec = importlib.util.spec_from_file_location("quality_benchmark", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_data_folder(quality, tmp_path, capsys):
    assert quality.main(["--data", str(tmp_path / "absent"), "--only", "wisconsin"]) == 2
    assert "shared data not found" in capsys.readouterr().err


def test_bad_override_is_named_not_a_traceback(quality, tmp_path, capsys):
    code = quality.main(["--data", str(tmp_path), "--only", "wisconsin", "--no-baseline", "--seeds", "0",
                         "--set", "train.epochz=3"])
    err = capsys.readouterr().err
    assert code == 2
    assert "quality benchmark stopped" in err and "epochz" in err and "Traceback" not in err
