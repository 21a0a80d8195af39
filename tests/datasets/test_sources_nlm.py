import pytest

from dxlab.datasets import get_dataset
from dxlab.datasets.sources.nlm_tb import read_clinical_reading
from dxlab.errors import DatasetError


def test_clinical_readings_both_formats(tmp_path):
    mont = tmp_path / "MCUCXR_0001_0.txt"
    mont.write_text("Patient's Sex: F\nPatient's Age: 045Y\nnormal\n")
    assert read_clinical_reading(mont) == {"sex": "female", "age": 45.0}
    shen = tmp_path / "CHNCXR_0001_1.txt"
    shen.write_text("male 35yrs\nPTB in the left upper field\n")
    assert read_clinical_reading(shen) == {"sex": "male", "age": 35.0}
    other = tmp_path / "CHNCXR_0002_0.txt"
    other.write_text("no usable text\n")
    assert read_clinical_reading(other) == {"sex": "", "age": None}


def test_nlm_names_found_anywhere_with_readings(tmp_path):
    for rel in ("a/CHNCXR_0001_0.png", "b/deep/MCUCXR_0042_1.png", "c/not_nlm.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    (tmp_path / "ClinicalReadings").mkdir()
    (tmp_path / "ClinicalReadings" / "MCUCXR_0042_1.txt").write_text("Patient's Sex: M\nPatient's Age: 061Y\nTB\n")
    m = get_dataset("nlm_tb").load(tmp_path)
    t = m.table.set_index("patient_id")
    assert list(t.index) == ["CHNCXR_0001_0", "MCUCXR_0042_1"]
    assert t.loc["MCUCXR_0042_1", "label"] == "tb" and t.loc["MCUCXR_0042_1", "source"] == "montgomery"
    assert t.loc["MCUCXR_0042_1", "age"] == 61 and t.loc["MCUCXR_0042_1", "sex"] == "male"
    assert t.loc["CHNCXR_0001_0", "label"] == "normal" and t.loc["CHNCXR_0001_0", "path"] == "a/CHNCXR_0001_0.png"
    assert len(get_dataset("nlm_montgomery").load(tmp_path)) == 1


def test_nlm_errors(tmp_path):
    with pytest.raises(DatasetError, match="folder not found"):
        get_dataset("nlm_tb").load(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no NLM chest X-rays found"):
        get_dataset("nlm_tb").load(tmp_path)


@pytest.mark.shared_data
def test_nlm_loader_on_real_images(shared_set):
    root = shared_set("tb_shenzhen_montgomery_128")
    m = get_dataset("nlm_tb").load(root)
    import pandas as pd

    truth = pd.read_csv(root / "labels.csv")
    assert len(m) == len(truth) == 402
    by_path = m.table.set_index("path")
    for _, row in truth.iterrows():
        assert by_path.loc[row["filename"], "label"] == ("tb" if row["label"] == 1 else "normal")
        assert by_path.loc[row["filename"], "source"] == row["source_set"].lower()
    assert m.table["patient_id"].is_unique
