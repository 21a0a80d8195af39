"""``dxlab deid IN_DIR OUT_DIR``: batch behaviour, exit status, map placement, refusals."""

from __future__ import annotations

import csv
import json
import stat

import numpy as np
import pydicom
import pytest

from dxlab.cli import main
from dxlab.datasets.dicom import make_dicom

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PIXELS = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 50)


def image(**attributes):
    return make_dicom(PIXELS, bits_stored=12, **attributes)


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "in"
    (src / "NGUYEN_VAN_A" / "2024-03-01").mkdir(parents=True)
    image(PatientID="079123456789", PatientName="NGUYEN^VAN A", StudyDate="20240301",
          InstitutionName="Bach Mai Hospital").save_as(src / "NGUYEN_VAN_A" / "2024-03-01" / "chest.dcm", enforce_file_format=True)
    image(PatientID="079123456789", PatientName="NGUYEN^VAN A", StudyDate="20240415").save_as(src / "NGUYEN_VAN_A" / "follow-up.dcm", enforce_file_format=True)
    return src


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_deid_tree_writes_uid_named_files_and_a_separate_map(tree, tmp_path, capsys, _isolated_home):
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "deid", str(tree), str(out), "--json")
    assert code == 0
    report = json.loads(stdout)
    assert (report["ok"], report["failed"], report["files"]) == (2, 0, 2)
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 2 and all(p.name.startswith("2.25.") for p in written)
    # the source's folder and file names (name, study date, body part) are gone; UIDs are random digits, so the
    # date is looked for as it was written, not as "2024" (which a UID may hold by chance)
    names = [str(p.relative_to(out)) for p in out.rglob("*")]
    assert not any(s in name for name in names for s in ("NGUYEN", "2024-03-01", "chest", "follow-up"))
    for path in written:
        data = path.read_bytes()
        for text in (b"079123456789", b"NGUYEN", b"Bach Mai", b"20240301"):
            assert text not in data
    first, second = (pydicom.dcmread(p) for p in written)
    assert first.PatientID == second.PatientID == first.PatientName  # one patient, one pseudonym
    map_file = report["map"]
    assert not map_file.startswith(str(out)) and map_file.startswith(str(_isolated_home))
    rows = list(csv.DictReader(open(map_file)))
    assert {"kind": "patient", "new": first.PatientID, "original": "079123456789", "date_offset_days": ""} in rows
    key_file = _isolated_home / "deid.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_bad_files_are_listed_and_the_exit_status_says_so(tree, tmp_path, capsys):
    (tree / "notes.txt").write_text("not DICOM")
    report = image(PatientID="X")
    del report.PixelData
    report.save_as(tree / "report.dcm", enforce_file_format=True)
    burned = image(PatientID="Y", BurnedInAnnotation="YES")
    burned.save_as(tree / "burned.dcm", enforce_file_format=True)
    out = tmp_path / "out"
    code, stdout, stderr = run(capsys, "deid", str(tree), str(out))
    assert code == 1 and "3 of 5 file(s) could not be de-identified" in stderr
    assert "notes.txt" in stdout and "not a DICOM file" in stdout and "no pixel data" in stdout and "BurnedInAnnotation" in stdout
    assert len(list(out.rglob("*.dcm"))) == 2  # the good ones were still written

    code, stdout, _ = run(capsys, "deid", str(tree), str(out), "--allow-burned-in", "--json")
    assert code == 1 and json.loads(stdout)["ok"] == 3


def test_options_key_file_dates_and_map(tree, tmp_path, capsys):
    key, map_file, out = tmp_path / "secret" / "project.key", tmp_path / "maps" / "map.csv", tmp_path / "out"
    code, stdout, _ = run(capsys, "deid", str(tree), str(out), "--key-file", str(key), "--keep-dates-shifted",
                          "--map", str(map_file), "--json")
    assert code == 0 and key.is_file() and map_file.is_file()
    ds = pydicom.dcmread(next(out.rglob("*.dcm")))
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    assert ds.StudyDate not in ("", "20240301", "20240415")
    offsets = {r["date_offset_days"] for r in csv.DictReader(open(map_file)) if r["kind"] == "patient"}
    assert len(offsets) == 1 and int(offsets.pop()) < 0
    # the same key again gives the same pseudonyms; the map is merged, not replaced
    run(capsys, "deid", str(tree), str(tmp_path / "out2"), "--key-file", str(key), "--map", str(map_file))
    again = pydicom.dcmread(next((tmp_path / "out2").rglob("*.dcm")))
    assert again.PatientID == ds.PatientID


def test_refusals(tree, tmp_path, capsys):
    code, _, stderr = run(capsys, "deid", str(tree), str(tree / "deid"))
    assert code == 2 and "inside it" in stderr
    code, _, stderr = run(capsys, "deid", str(tree), str(tree))
    assert code == 2 and "is the input folder" in stderr
    out = tmp_path / "out"
    code, _, stderr = run(capsys, "deid", str(tree), str(out), "--map", str(out / "map.csv"))
    assert code == 2 and "must be kept apart" in stderr
    code, _, stderr = run(capsys, "deid", str(tmp_path / "absent"), str(out))
    assert code == 2 and "input folder not found" in stderr
    assert not out.exists()
