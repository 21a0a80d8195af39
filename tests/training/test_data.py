import pytest

from dxlab.datasets.synthetic import synthesize
from dxlab.errors import ConfigError
from dxlab.training.config import DataConfig
from dxlab.training.data import build_run_manifest


def _nlm(tmp_path, name, n=12, seed=0):
    manifest, path = synthesize("tb_cxr", tmp_path / name, n=n, seed=seed, size=16)
    return path


def test_sources_merge_with_groups_kept_apart(tmp_path):
    a, b = _nlm(tmp_path, "a"), _nlm(tmp_path, "b", seed=1)
    cfg = DataConfig(sources=({"manifest": str(a)}, {"manifest": str(b)}), positive_class="tb",
                     split={"keep_official": False})
    m = build_run_manifest("tb_cxr", cfg)
    assert len(m) == 24 and set(m.table["source_set"]) == {"synthetic_nlm_tb#1", "synthetic_nlm_tb#2"}
    assert m.classes == ("normal", "tb")
    assert m.table["patient_id"].nunique() == 24, "same ids in two sets stay two groups"
    assert all(p.startswith("/") for p in m.table["path"]), "merged paths are absolute"
    assert (m.table.groupby("patient_id")["split"].nunique() == 1).all()


def test_relabel_filter_and_positive_class_order(tmp_path):
    manifest, path = synthesize("dermatology", tmp_path / "derm", n=40, seed=0, size=16)
    cfg = DataConfig(sources=({"manifest": str(path), "relabel": {"nv": "nevus"}},), classes=("nevus", "mel"),
                     positive_class="mel")
    m = build_run_manifest("dermatology", cfg)
    assert m.classes == ("nevus", "mel") and set(m.table["label"]) == {"nevus", "mel"}
    flipped = DataConfig(sources=({"manifest": str(path), "relabel": {"nv": "nevus"}},), classes=("mel", "nevus"),
                         positive_class="mel")
    assert build_run_manifest("dermatology", flipped).classes == ("nevus", "mel"), "positive class last"


def test_bad_data_sections(tmp_path):
    path = _nlm(tmp_path, "a")
    with pytest.raises(ConfigError, match=r"data.relabel names \['healthy'\]"):
        build_run_manifest("tb_cxr", DataConfig(sources=({"manifest": str(path)},), relabel={"healthy": "normal"}))
    with pytest.raises(ConfigError, match="data.positive_class 'cancer'"):
        build_run_manifest("tb_cxr", DataConfig(sources=({"manifest": str(path)},), positive_class="cancer"))
    with pytest.raises(ConfigError, match="is for task 'tb_cxr', not 'dermatology'"):
        build_run_manifest("dermatology", DataConfig(sources=({"manifest": str(path)}, {"manifest": str(path)})))
    with pytest.raises(ConfigError, match="none of the configured data sources is present"):
        build_run_manifest("tb_cxr", DataConfig(sources=({"dataset": "tbx11k", "root": str(tmp_path / "x"), "optional": True},)))
    with pytest.raises(ValueError, match="exactly one of 'dataset'"):
        DataConfig(sources=({"dataset": "nlm_tb", "manifest": str(path)},))
