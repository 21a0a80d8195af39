"""De-identification (PS3.15 Annex E Basic Profile): nothing identifying survives, pixels and structure do."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import stat

import numpy as np
import pydicom
import pytest
from pydicom.datadict import DicomDictionary, dictionary_keyword, dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dxlab.datasets.deid import (
    PROFILE_EDITION,
    DeidentificationError,
    Deidentifier,
    deidentify_file,
    deidentify_tree,
    load_key,
    load_profile,
)
from dxlab.datasets.dicom import make_dicom

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about over-long test values

KEY = b"test-key-0123456789abcdef"
PIXELS = np.full((8, 8), 7, dtype=np.uint16)  # constant, so its bytes cannot look like a token
TEXT_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}


def _tag(rule) -> int:
    return int(rule.tag.strip("()").replace(",", ""), 16)


def identifying_dataset():
    """A DICOM image whose every Table E.1-1 attribute (known to pydicom), nested sequences,
    overlays, curves and private tags hold recognisable identifying values.

    Returns the dataset, the text tokens that must not survive (token -> where), the
    original UIDs, and the tags of binary-number attributes (checked structurally).
    """
    ds = make_dicom(PIXELS, bits_stored=12)
    tokens: dict[str, str] = {}
    uids: set[str] = set()
    numeric: set[int] = set()
    for n, rule in enumerate(load_profile()):
        if "x" in rule.tag:
            continue
        tag = _tag(rule)
        if tag >> 16 in (0x0000, 0x0002):
            continue  # command set (never in a stored file; pydicom refuses it) and file meta ((0002,0003), checked below)
        vr = dictionary_VR(tag).split(" or ")[0]
        token = f"IDENT{n:04d}"
        if vr in TEXT_VRS:
            value = token if vr != "UR" else f"http://{token}.example"
            tokens[token] = rule.keyword
        elif vr == "DA":
            value = (dt.date(1951, 1, 1) + dt.timedelta(days=n)).strftime("%Y%m%d")
            tokens[value] = rule.keyword
        elif vr == "DT":
            value = (dt.date(1951, 1, 1) + dt.timedelta(days=n)).strftime("%Y%m%d") + "101010"
            tokens[value] = rule.keyword
        elif vr == "TM":
            value = f"2359{n % 60:02d}.{n:06d}"
            tokens[value] = rule.keyword
        elif vr == "DS":
            value = f"9{n:04d}.5"
            tokens[value] = rule.keyword
        elif vr == "IS":
            value = f"9{n:06d}"
            tokens[value] = rule.keyword
        elif vr == "AS":
            value = f"{n % 1000:03d}Y"
            numeric.add(tag)
        elif vr == "UI":
            value = f"1.2.826.0.1.3680043.10.9999.{n}"
            uids.add(value)
        elif vr in ("OB", "UN", "OW"):
            value = token.encode() + b"\x00"
            tokens[token] = rule.keyword
        elif vr == "SQ":
            item = Dataset()
            if rule.action == "X/Z/U*":  # kept, its instance UIDs replaced: only references inside
                item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
                item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.10.9999.{n}.1"
                uids.add(item.ReferencedSOPInstanceUID)
            else:
                item.CodeValue = token
                item.CodingSchemeDesignator = "99TEST"
                item.CodeMeaning = token
                tokens[token] = rule.keyword
            value = Sequence([item])
        else:  # US, SS, UL, FL, ...: numbers cannot carry a token; checked structurally
            value = 4321
            numeric.add(tag)
        ds.add_new(tag, vr, value)
    uids.update({ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID})

    # private tags, top level and nested
    block = ds.private_block(0x0009, "IDENT-CREATOR", create=True)
    block.add_new(0x01, "LO", "IDENT-PRIVATE-VALUE")
    tokens.update({"IDENT-CREATOR": "private creator", "IDENT-PRIVATE-VALUE": "private value"})

    # a sequence the profile keeps, holding identifying attributes two levels deep
    deep = Dataset()
    deep.OperatorsName = "IDENT-DEEP-OPERATOR"
    deep.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.9999.77777"
    deep.private_block(0x0011, "IDENT-DEEP-CREATOR", create=True).add_new(0x01, "LO", "IDENT-DEEP-PRIVATE")
    nested = Dataset()
    nested.CodeValue = "T-D3000"
    nested.CodingSchemeDesignator = "SRT"
    nested.CodeMeaning = "Chest"
    nested.InstitutionName = "IDENT-NESTED-INSTITUTION"
    nested.PatientName = "IDENT-NESTED-NAME"
    nested.add_new(0x00080020, "DA", "19990909")  # Study Date, nested
    nested.private_block(0x0013, "IDENT-NESTED-CREATOR", create=True).add_new(0x02, "SH", "IDENT-NPRIV")
    nested.add_new(0x00540222, "SQ", Sequence([deep]))  # View Modifier Code Sequence (not in the table)
    ds.AnatomicRegionSequence = Sequence([nested])
    tokens.update({t: "nested" for t in ("IDENT-DEEP-OPERATOR", "IDENT-DEEP-CREATOR", "IDENT-DEEP-PRIVATE", "IDENT-NESTED-INSTITUTION",
                                         "IDENT-NESTED-NAME", "19990909", "IDENT-NESTED-CREATOR", "IDENT-NPRIV")})
    uids.add(deep.ReferencedSOPInstanceUID)

    # overlay and curve groups, with text the table does not list by name
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000022, "LO", "IDENT-OVERLAY-DESCRIPTION")
    ds.add_new(0x60003000, "OW", b"IDENT-OVERLAY-DATA")
    ds.add_new(0x50003000, "OB", b"IDENT-CURVE-DATA")
    tokens.update({"IDENT-OVERLAY-DESCRIPTION": "overlay", "IDENT-OVERLAY-DATA": "overlay", "IDENT-CURVE-DATA": "curve"})

    # a date attribute the table does not list
    unlisted = next(tag for tag, entry in sorted(DicomDictionary.items())
                    if entry[0] == "DA" and entry[3] == "" and tag not in {_tag(r) for r in load_profile() if "x" not in r.tag})
    ds.add_new(unlisted, "DA", "19770707")
    tokens["19770707"] = dictionary_keyword(unlisted)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds, tokens, uids, numeric


def write(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return path


def walk(ds):
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from walk(item)


@pytest.fixture
def identifying(tmp_path):
    ds, tokens, uids, numeric = identifying_dataset()
    (tmp_path / "in").mkdir()
    path = write(ds, tmp_path / "in" / "NGUYEN_VAN_A.dcm")
    data = path.read_bytes()
    missing = [t for t in tokens if t.encode() not in data] + [u for u in uids if u.encode() not in data]
    assert not missing, f"the test input lacks {missing[:5]}"
    return path, tokens, uids, numeric


def test_profile_table_is_the_2024b_basic_profile():
    rules = load_profile()
    assert PROFILE_EDITION == "2024b" and len(rules) >= 600
    by_keyword = {r.keyword: r.action for r in rules}
    assert by_keyword["PatientName"] == "Z" and by_keyword["SOPInstanceUID"] == "U"
    assert by_keyword["InstitutionName"] == "X/Z/D" and by_keyword["ReferencedImageSequence"] == "X/Z/U*"
    assert by_keyword["PatientAge"] == "X" and by_keyword["StudyDate"] == "Z"
    assert {r.action for r in rules} <= {"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
    for r in rules:
        if "x" not in r.tag:
            assert dictionary_keyword(_tag(r)) == r.keyword, r


def test_nothing_identifying_survives_and_pixels_are_unchanged(identifying, tmp_path):
    path, tokens, uids, numeric = identifying
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    deid = Deidentifier(KEY)
    out = deidentify_file(deid, path, tmp_path / "out")
    data = out.read_bytes()
    leaked = {t: where for t, where in tokens.items() if t.encode() in data}
    assert not leaked, f"identifying values left in the output: {leaked}"
    assert not [u for u in uids if u.encode() in data]
    assert b"NGUYEN" not in str(out).encode()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # the input is never modified

    result = pydicom.dcmread(out)
    original = pydicom.dcmread(path)
    assert result.PixelData == original.PixelData
    assert result.Rows == original.Rows and result.SOPClassUID == original.SOPClassUID
    assert not [e.tag for e in walk(result) if e.tag.is_private]
    assert not [e.tag for e in walk(result) if 0x5000 <= e.tag.group <= 0x60FF]
    for tag in numeric:
        if tag in result:
            assert result[tag].value in (None, "", 0, b"", "000Y", b"\x00\x00"), f"{tag} kept {result[tag].value!r}"
    assert result.PatientID == result.PatientName == deid.pseudonym(original.PatientID)
    assert result.PatientIdentityRemoved == "YES"
    assert [i.CodeValue for i in result.DeidentificationMethodCodeSequence] == ["113100"]
    assert result.LongitudinalTemporalInformationModified == "REMOVED"
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID == deid.new_uid(original.SOPInstanceUID)
    assert result.AnatomicRegionSequence[0].CodeMeaning == "Chest"  # kept attributes survive
    assert result.ReferencedImageSequence[0].ReferencedSOPInstanceUID == deid.new_uid(original.ReferencedImageSequence[0].ReferencedSOPInstanceUID)


def test_dates_shifted_per_patient_keep_intervals(tmp_path):
    def image(pid, study, acq_dt):
        return make_dicom(PIXELS, bits_stored=12, PatientID=pid, StudyDate=study, StudyTime="101500",
                          AcquisitionDateTime=acq_dt, PatientBirthDate="19600101")

    deid = Deidentifier(KEY, keep_dates_shifted=True)
    a = deid.deidentify(image("P-1", "20200110", "20200110093000.5"))
    b = deid.deidentify(image("P-1", "20200301", "20200301080000"))
    c = deid.deidentify(image("P-2", "20200110", "20200110093000.5"))
    offset = deid.date_offset_days("P-1")
    assert -3650 <= offset <= -1
    assert a.StudyDate == (dt.date(2020, 1, 10) + dt.timedelta(days=offset)).strftime("%Y%m%d")
    assert a.AcquisitionDateTime == a.StudyDate + "093000.5" and a.StudyTime == "101500"
    interval = lambda x, y: (dt.datetime.strptime(y.StudyDate, "%Y%m%d") - dt.datetime.strptime(x.StudyDate, "%Y%m%d")).days
    assert interval(a, b) == 51  # the same patient keeps the interval between studies
    assert c.StudyDate != a.StudyDate  # another patient, another offset
    assert a.PatientBirthDate == ""
    assert [i.CodeValue for i in a.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    assert a.LongitudinalTemporalInformationModified == "MODIFIED"
    assert deid.mapping.offsets[a.PatientID] == offset


def test_shifted_mode_still_removes_every_text_token(identifying, tmp_path):
    path, tokens, uids, _ = identifying
    data = deidentify_file(Deidentifier(KEY, keep_dates_shifted=True), path, tmp_path / "out").read_bytes()
    text_tokens = [t for t in tokens if not t[:1].isdigit()]
    assert not [t for t in text_tokens if t.encode() in data]
    assert not [u for u in uids if u.encode() in data]


def test_pseudonyms_and_uids_are_stable_under_a_key_and_differ_under_another(identifying, tmp_path):
    path, *_ = identifying
    first = deidentify_file(Deidentifier(KEY), path, tmp_path / "a")
    again = deidentify_file(Deidentifier(KEY), path, tmp_path / "b")
    other = deidentify_file(Deidentifier(b"another-key-0123456789"), path, tmp_path / "c")
    assert first.relative_to(tmp_path / "a") == again.relative_to(tmp_path / "b")
    assert first.read_bytes() == again.read_bytes()  # fully deterministic
    x, y = pydicom.dcmread(first), pydicom.dcmread(other)
    assert x.PatientID != y.PatientID and x.StudyInstanceUID != y.StudyInstanceUID and x.SOPInstanceUID != y.SOPInstanceUID
    assert x.SOPInstanceUID.startswith("2.25.") and len(x.SOPInstanceUID) <= 64


def test_uids_are_replaced_consistently_across_files():
    deid = Deidentifier(KEY)
    a = make_dicom(PIXELS, bits_stored=12, PatientID="P")
    ref = Dataset()
    ref.ReferencedSOPClassUID = a.SOPClassUID
    ref.ReferencedSOPInstanceUID = a.SOPInstanceUID
    b = make_dicom(PIXELS, bits_stored=12, PatientID="P", StudyInstanceUID=a.StudyInstanceUID, SourceImageSequence=Sequence([ref]))
    da, db = deid.deidentify(a), deid.deidentify(b)
    assert db.StudyInstanceUID == da.StudyInstanceUID
    assert db.SourceImageSequence[0].ReferencedSOPInstanceUID == da.SOPInstanceUID
    assert deid.mapping.uids[da.SOPInstanceUID] == a.SOPInstanceUID
    assert a.PatientID == "P" and a.SOPInstanceUID != da.SOPInstanceUID  # the input dataset is untouched


def test_burned_in_annotation_is_refused_unless_allowed():
    ds = make_dicom(PIXELS, bits_stored=12, PatientID="P", BurnedInAnnotation="YES")
    with pytest.raises(DeidentificationError, match="BurnedInAnnotation is YES"):
        Deidentifier(KEY).deidentify(ds)
    assert Deidentifier(KEY, allow_burned_in=True).deidentify(ds).PatientIdentityRemoved == "YES"


def test_key_file_is_created_private_and_reused(tmp_path):
    key_file = tmp_path / "keys" / "deid.key"
    key = load_key(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key) >= 32
    assert load_key(key_file) == key
    short = tmp_path / "short.key"
    short.write_text("abc")
    with pytest.raises(DeidentificationError, match="expected at least 16"):
        load_key(short)
    with pytest.raises(DeidentificationError, match="not found"):
        load_key(tmp_path / "absent.key", create=False)


def test_tree_lists_bad_files_and_keeps_the_map_apart(tmp_path):
    src = tmp_path / "in"
    (src / "TRAN_THI_B").mkdir(parents=True)
    write(make_dicom(PIXELS, bits_stored=12, PatientID="CCCD-1"), src / "TRAN_THI_B" / "a.dcm")
    write(make_dicom(PIXELS, bits_stored=12, PatientID="CCCD-1"), src / "b.dcm")
    report_ds = make_dicom(PIXELS, bits_stored=12, PatientID="CCCD-1")
    del report_ds.PixelData
    write(report_ds, src / "report.dcm")
    (src / "notes.txt").write_text("not DICOM")
    out, map_file = tmp_path / "out", tmp_path / "private" / "map.csv"
    report = deidentify_tree(Deidentifier(KEY), src, out, map_path=map_file)
    assert (report["ok"], report["failed"], report["files"]) == (2, 2, 4)
    errors = {r["source"]: r["error"] for r in report["results"] if r["status"] == "failed"}
    assert "no pixel data" in errors["report.dcm"] and "not a DICOM file" in errors["notes.txt"]
    assert len(list(out.rglob("*.dcm"))) == 2 and not list(out.rglob("*.csv"))
    assert not any("TRAN" in str(p) or "CCCD" in str(p) for p in out.rglob("*"))
    text = map_file.read_text()
    assert "CCCD-1" in text and stat.S_IMODE(map_file.stat().st_mode) == 0o600
    with pytest.raises(DeidentificationError, match="inside the de-identified output"):
        deidentify_tree(Deidentifier(KEY), src, out, map_path=out / "map.csv")
    with pytest.raises(DeidentificationError, match="is the input folder or inside it"):
        deidentify_tree(Deidentifier(KEY), src, src / "deid")


@pytest.mark.shared_data
def test_real_samples_deidentify_and_still_decode_the_same(shared_data, tmp_path):
    from dxlab.datasets.dicom import read_dicom

    src = shared_data / "dicom"
    if not src.is_dir():
        pytest.skip(f"{src} not present")
    deid = Deidentifier(KEY)
    report = deidentify_tree(deid, src, tmp_path / "out", map_path=tmp_path / "map.csv")
    status = {r["source"]: r for r in report["results"]}
    assert status["sources.csv"]["status"] == "failed"  # not DICOM, listed
    # the header-only copy of the SIIM image shares its SOP Instance UID: the second one is refused, not overwritten
    siim = [s for s in status if "SIIM" in s]
    assert sorted(status[s]["status"] for s in siim) == ["failed", "ok"]
    assert report["ok"] == 8
    for name in ("chest_CR_MONO1_10bit_440px_noFileMeta.dcm", "mammo_MG_biopsy_overlay.dcm"):
        original, _ = read_dicom(src / name)
        again, meta = read_dicom(tmp_path / "out" / status[name]["output"])
        np.testing.assert_array_equal(original, again)
        assert meta.patient_id.startswith("DX")
    overlay = pydicom.dcmread(tmp_path / "out" / status["mammo_MG_biopsy_overlay.dcm"]["output"])
    assert not [e for e in overlay if 0x6000 <= e.tag.group <= 0x60FF]
