"""DICOM reading: LUT order, transfer syntaxes, errors, dispatch, the real samples, and the DICOM importer."""

from __future__ import annotations

import io
import stat

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    HTJ2KLossless,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from dxlab.datasets.dicom import looks_like_dicom, make_dicom, read_any, read_dicom, read_dicom_meta
from dxlab.datasets.importers import import_dicom
from dxlab.errors import DatasetError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about odd sample values

RAMP = (np.linspace(0, 4095, 64)[None, :] * np.ones((48, 1))).astype(np.uint16)  # 12-bit grey ramp


def to_bytes(ds, *, file_format: bool = True) -> bytes:
    buffer = io.BytesIO()
    if file_format:
        ds.save_as(buffer, enforce_file_format=True)
    else:
        ds.save_as(buffer, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return buffer.getvalue()


# --------------------------------------------------------------------------- transfer syntaxes


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless,
                                JPEGLSLossless, JPEG2000Lossless])
def test_lossless_transfer_syntaxes_give_the_stored_values_scaled_by_bits_stored(ts):
    image, meta = read_dicom(to_bytes(make_dicom(RAMP, bits_stored=12, transfer_syntax=ts)))
    assert image.dtype == np.float32 and image.shape == (48, 64)
    np.testing.assert_allclose(image, RAMP / 4095.0, atol=1e-6)
    assert meta.transfer_syntax == ts and meta.voi == "none"


def test_jpeg_baseline_decodes_close_to_the_original():
    ramp8 = (RAMP // 16).astype(np.uint8)
    image, _ = read_dicom(to_bytes(make_dicom(ramp8, transfer_syntax=JPEGBaseline8Bit)))
    assert np.abs(image - ramp8 / 255.0).mean() < 0.01


def test_rgb_becomes_grey_unless_asked_for_colour():
    ramp8 = (RAMP // 16).astype(np.uint8)
    rgb = np.stack([ramp8, ramp8 // 2, 255 - ramp8], axis=-1)
    data = to_bytes(make_dicom(rgb))
    grey, _ = read_dicom(data)
    colour, _ = read_dicom(data, grey=False)
    assert grey.shape == (48, 64) and colour.shape == (48, 64, 3)
    np.testing.assert_allclose(colour, rgb / 255.0, atol=1e-6)
    np.testing.assert_allclose(grey, colour @ np.array([0.299, 0.587, 0.114], dtype=np.float32), atol=1e-5)


def test_file_without_preamble_or_file_meta_is_read_with_force():
    ds = make_dicom(RAMP, bits_stored=12, PatientID="P1")
    del ds.file_meta
    data = to_bytes(ds, file_format=False)
    assert data[128:132] != b"DICM"
    image, meta = read_dicom(data)
    np.testing.assert_allclose(image, RAMP / 4095.0, atol=1e-6)
    assert meta.transfer_syntax == ImplicitVRLittleEndian and meta.patient_id == "P1"


# --------------------------------------------------------------------------- the LUT pipeline


def test_rescale_then_window_then_unit_range():
    stored = (np.arange(48 * 64).reshape(48, 64) % 4096).astype(np.uint16)
    ds = make_dicom(stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=1000, WindowWidth=2001)
    image, meta = read_dicom(to_bytes(ds))
    hu = stored * 2.0 - 1000
    expected = np.clip((hu - (1000 - 0.5)) / 2000 + 0.5, 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-5)
    assert meta.voi == "window 1000/2001"


def test_window_choice_index_and_explicit_and_none():
    ds = make_dicom(RAMP, bits_stored=12, WindowCenter=[1000, 3000], WindowWidth=[500, 1000])
    data = to_bytes(ds)
    first, _ = read_dicom(data)
    second, meta = read_dicom(data, window=1)
    explicit, _ = read_dicom(data, window=(2048, 4096))
    none, _ = read_dicom(data, window=None)
    assert meta.voi == "window 3000/1000"
    assert first[0, 20] == pytest.approx(np.clip((RAMP[0, 20] - 999.5) / 499 + 0.5, 0, 1), abs=1e-5)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(none, RAMP / 4095.0, atol=1e-6)
    np.testing.assert_allclose(explicit, np.clip((RAMP - 2047.5) / 4095 + 0.5, 0, 1), atol=1e-5)
    with pytest.raises(DatasetError, match="window index 5 out of range; the file has 2"):
        read_dicom(data, window=5)


def test_voi_lut_sequence_is_preferred_to_the_window_and_scaled_by_its_bits():
    stored = np.tile(np.arange(16, dtype=np.uint16), (4, 1))  # 0..15
    items = []
    for table in (np.arange(8, dtype=np.uint16) * 100, np.full(8, 7, dtype=np.uint16)):
        item = Dataset()
        item.LUTDescriptor = [8, 4, 10]  # 8 entries, first mapped value 4, 10-bit output
        item.add_new(0x00283006, "US", table.tolist())  # LUT Data
        items.append(item)
    ds = make_dicom(stored, bits_stored=4, WindowCenter=8, WindowWidth=4, VOILUTSequence=Sequence(items))
    data = to_bytes(ds)
    image, meta = read_dicom(data)
    expected = np.clip(stored.astype(int) - 4, 0, 7) * 100 / 1023.0  # values below 4 map to entry 0, above 11 to entry 7
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert meta.voi.startswith("VOI LUT 0")
    second, _ = read_dicom(data, window=1)
    np.testing.assert_allclose(second, 7 / 1023.0, atol=1e-6)
    windowed, _ = read_dicom(data, window=(8, 4))
    assert windowed.min() == 0.0 and windowed.max() == 1.0


def test_modality_lut_sequence_maps_the_stored_values():
    stored = np.tile(np.arange(8, dtype=np.uint16), (4, 1))
    item = Dataset()
    item.LUTDescriptor = [8, 0, 12]
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "US", (np.arange(8, dtype=np.uint16) ** 2 * 10).tolist())  # LUT Data 0..490
    image, _ = read_dicom(to_bytes(make_dicom(stored, bits_stored=3, ModalityLUTSequence=Sequence([item]))))
    np.testing.assert_allclose(image, (stored.astype(float) ** 2 * 10) / 490.0, atol=1e-6)  # range of the LUT


def test_monochrome1_is_inverted_after_voi():
    mono2, _ = read_dicom(to_bytes(make_dicom(RAMP, bits_stored=12, WindowCenter=2048, WindowWidth=2048)))
    mono1, meta = read_dicom(to_bytes(make_dicom(RAMP, bits_stored=12, WindowCenter=2048, WindowWidth=2048, photometric="MONOCHROME1")))
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert meta.inverted


def test_sigmoid_voi_function():
    ds = make_dicom(RAMP, bits_stored=12, WindowCenter=2048, WindowWidth=1000, VOILUTFunction="SIGMOID")
    image, meta = read_dicom(to_bytes(ds))
    np.testing.assert_allclose(image, 1 / (1 + np.exp(-4 * (RAMP - 2048.0) / 1000)), atol=1e-5)
    assert "SIGMOID" in meta.voi


def test_multiframe_is_refused_unless_asked():
    data = to_bytes(make_dicom(np.stack([RAMP, RAMP // 2, RAMP // 4]), bits_stored=12))
    with pytest.raises(DatasetError, match="multi-frame image \\(3 frames\\)"):
        read_dicom(data)
    stack, meta = read_dicom(data, allow_multiframe=True)
    assert stack.shape == (3, 48, 64) and meta.frames == 3


def test_metadata_is_carried():
    ds = make_dicom(RAMP, bits_stored=12, PatientID="PAT-7", PatientSex="F", PatientAge="045Y", Modality="CR",
                    BodyPartExamined="CHEST", ViewPosition="PA", PixelSpacing=[0.2, 0.25], ImageLaterality="L")
    data = to_bytes(ds)
    image, meta = read_dicom(data)
    assert (meta.patient_id, meta.sex, meta.age, meta.modality, meta.body_part, meta.view_position) == ("PAT-7", "F", 45.0, "CR", "CHEST", "PA")
    assert read_dicom_meta(data).sop_uid == ds.SOPInstanceUID  # the header alone, no decoding
    assert meta.pixel_spacing == (0.2, 0.25) and meta.laterality == "L"
    assert (meta.study_uid, meta.series_uid, meta.sop_uid) == (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert meta.rows == 48 and meta.columns == 64 and meta.bits_stored == 12 and meta.has_pixels


# --------------------------------------------------------------------------- errors name the file


def test_errors_name_the_file_and_the_problem(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("not an image\n" * 20)
    with pytest.raises(DatasetError, match=f"{text}: not a DICOM file"):
        read_dicom(text)

    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match="empty file"):
        read_dicom(empty)

    no_pixels = make_dicom(RAMP, bits_stored=12)
    del no_pixels.PixelData
    path = tmp_path / "report.dcm"
    path.write_bytes(to_bytes(no_pixels))
    with pytest.raises(DatasetError, match=f"{path}: no pixel data"):
        read_dicom(path)

    short = make_dicom(RAMP, bits_stored=12)
    short.PixelData = short.PixelData[:1000]
    path = tmp_path / "truncated.dcm"
    path.write_bytes(to_bytes(short))
    with pytest.raises(DatasetError, match=f"{path}: pixel data do not match the header \\(Rows 48, Columns 64"):
        read_dicom(path)

    htj2k = make_dicom(RAMP, bits_stored=12)
    htj2k.file_meta.TransferSyntaxUID = HTJ2KLossless
    htj2k.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])
    path = tmp_path / "htj2k.dcm"
    path.write_bytes(to_bytes(htj2k))
    with pytest.raises(DatasetError, match=f"{path}: no installed decoder for transfer syntax High-Throughput JPEG 2000.*install pylibjpeg"):
        read_dicom(path)

    corrupt = make_dicom(RAMP, bits_stored=12)
    corrupt.file_meta.TransferSyntaxUID = JPEG2000Lossless
    corrupt.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])
    path = tmp_path / "corrupt.dcm"
    path.write_bytes(to_bytes(corrupt))  # must raise, not abort the process (gdcm's OpenJPEG would)
    with pytest.raises(DatasetError, match=f"{path}: pixel data could not be decoded"):
        read_dicom(path)

    with pytest.raises(DatasetError, match="DICOM file not found"):
        read_dicom(tmp_path / "missing.dcm")


# --------------------------------------------------------------------------- dispatch


def test_read_any_dispatches_on_content(tmp_path):
    png = tmp_path / "image.png"
    Image.fromarray((RAMP // 16).astype(np.uint8)).save(png)
    np.testing.assert_allclose(read_any(png), (RAMP // 16) / 255.0, atol=1e-6)
    with_marker = tmp_path / "with_marker"  # no suffix: sniffed by DICM
    with_marker.write_bytes(to_bytes(make_dicom(RAMP, bits_stored=12)))
    np.testing.assert_allclose(read_any(with_marker), RAMP / 4095.0, atol=1e-6)
    ds = make_dicom(RAMP, bits_stored=12)
    del ds.file_meta
    bare = to_bytes(ds, file_format=False)  # no marker: force-parsed
    np.testing.assert_allclose(read_any(bare), RAMP / 4095.0, atol=1e-6)
    assert looks_like_dicom(with_marker) and looks_like_dicom(bare) and not looks_like_dicom(png)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x01\x02garbage" * 50)
    with pytest.raises(DatasetError, match="not a readable image or DICOM file"):
        read_any(junk)


# --------------------------------------------------------------------------- the real samples


@pytest.fixture(scope="module")
def real(shared_data):
    """Every file of ../shared/data/dicom decoded once (the large mammograms are slow)."""
    folder = shared_data / "dicom"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    return {p.name: read_dicom(p) for p in sorted(folder.glob("*.dcm"))}


@pytest.mark.shared_data
def test_every_real_file_decodes(real):
    assert len(real) == 9
    for name, (image, meta) in real.items():
        assert image.dtype == np.float32 and image.ndim == 2, name
        assert 0.0 <= image.min() and image.max() <= 1.0, name
        assert image.std() > 0.05, f"{name}: nearly flat image"
        assert image.shape == (meta.rows, meta.columns), name


@pytest.mark.shared_data
def test_same_chest_in_two_codecs_decodes_to_nearly_the_same_image(real):
    j2k, _ = real["chest_CR_MONO1_RG1_J2KI.dcm"]
    jls, _ = real["chest_CR_MONO1_RG1_JLSN.dcm"]
    assert j2k.shape == jls.shape
    assert np.corrcoef(j2k.ravel(), jls.ravel())[0, 1] > 0.999
    assert np.abs(j2k - jls).mean() < 0.01


def _corners_and_centre(image: np.ndarray) -> tuple[float, float]:
    h, w = image.shape
    bh, bw = h // 8, w // 8
    corners = np.mean([image[:bh, :bw].mean(), image[:bh, -bw:].mean(), image[-bh:, :bw].mean(), image[-bh:, -bw:].mean()])
    return float(corners), float(image[h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean())


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["chest_CR_MONO1_RG1_J2KI.dcm", "chest_CR_MONO1_RG1_JLSN.dcm",
                                  "chest_CR_MONO1_10bit_440px_noFileMeta.dcm"])
def test_monochrome1_chest_has_dark_air_after_inversion(real, name):
    image, meta = real[name]
    corners, centre = _corners_and_centre(image)
    assert meta.photometric == "MONOCHROME1" and meta.inverted
    assert corners < centre - 0.05
    assert meta.warnings == ()


@pytest.mark.shared_data
def test_header_only_monochrome1_follows_the_header_and_warns(real):
    fake, meta = real["chest_CR_FAKE_MONO1_headeronly_SIIM.dcm"]
    original, _ = real["chest_CR_MONO2_SIIM_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"]
    np.testing.assert_allclose(fake, 1.0 - original, atol=1e-6)  # the header is followed ...
    assert meta.inverted and any("header is probably wrong" in w for w in meta.warnings)  # ... and flagged
    corners, centre = _corners_and_centre(original)
    assert corners < centre


@pytest.mark.shared_data
def test_real_headers(real):
    _, no_meta = real["chest_CR_MONO1_10bit_440px_noFileMeta.dcm"]
    assert no_meta.transfer_syntax == ImplicitVRLittleEndian and no_meta.voi == "window 550/1024"
    _, siim = real["chest_CR_MONO2_SIIM_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"]
    assert (siim.modality, siim.body_part, siim.view_position, siim.sex, siim.age) == ("CR", "CHEST", "PA", "M", 62.0)
    assert siim.pixel_spacing == (0.168, 0.168)
    _, gh133 = real["mammo_MG_MONO2_VOILUTSeq_GH133.dcm"]
    assert gh133.voi == "VOI LUT 0 (NORMAL)"  # the LUT Sequence wins over the 3 window presets
    _, dental = real["dental_CR_MONO1_ModalityLUTSeq.dcm"]
    assert dental.inverted and dental.voi == "none"
    _, mammo = real["mammo_MG1_J2KI_malignant_mass_microcalc.dcm"]
    assert mammo.rows == 4664 and mammo.columns == 3064


@pytest.mark.shared_data
def test_voi_lut_index_selects_another_lut(shared_data):
    path = shared_data / "dicom" / "mammo_MG_biopsy_overlay.dcm"  # small; has one window, no LUT Sequence
    if not path.is_file():
        pytest.skip(f"{path} not present")
    default, _ = read_dicom(path)
    wide, meta = read_dicom(path, window=(2048, 8192))
    assert meta.voi == "window 2048/8192" and wide.std() < default.std()


# --------------------------------------------------------------------------- import


def _write_tree(tmp_path):
    root = tmp_path / "dicoms"
    (root / "NGUYEN_VAN_A").mkdir(parents=True)
    (root / "TRAN_THI_B").mkdir()
    files = {
        "NGUYEN_VAN_A/img1.dcm": make_dicom(RAMP, bits_stored=12, PatientID="CCCD-001", PatientSex="M", PatientAge="050Y",
                                            Modality="CR", BodyPartExamined="CHEST", ViewPosition="PA"),
        "NGUYEN_VAN_A/img2.dcm": make_dicom(RAMP, bits_stored=12, PatientID="CCCD-001", Modality="CR"),
        "TRAN_THI_B/img1.dcm": make_dicom(RAMP, bits_stored=12, PatientID="CCCD-002", PatientSex="F", Modality="CR"),
    }
    for rel, ds in files.items():
        (root / rel).write_bytes(to_bytes(ds))
    (root / "README.txt").write_text("not DICOM")
    return root, files


def test_import_dicom_by_file_with_pseudonymous_patients(tmp_path):
    root, files = _write_tree(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nNGUYEN_VAN_A/img1.dcm,tb\nNGUYEN_VAN_A/img2.dcm,tb\nTRAN_THI_B/img1.dcm,normal\n")
    manifest = import_dicom(root, labels=labels, task="tb_cxr")
    table = manifest.table.set_index("path")
    assert list(manifest.classes) == ["normal", "tb"] and len(table) == 3
    assert table.loc["NGUYEN_VAN_A/img1.dcm", "patient_id"] == table.loc["NGUYEN_VAN_A/img2.dcm", "patient_id"]
    assert table.loc["NGUYEN_VAN_A/img1.dcm", "patient_id"] != table.loc["TRAN_THI_B/img1.dcm", "patient_id"]
    assert not any("CCCD" in pid for pid in table["patient_id"])
    assert table.loc["NGUYEN_VAN_A/img1.dcm", "sex"] == "male" and table.loc["NGUYEN_VAN_A/img1.dcm", "age"] == 50
    from dxlab.datasets.deid import Deidentifier, load_key

    assert table.loc["TRAN_THI_B/img1.dcm", "patient_id"] == Deidentifier(load_key()).pseudonym("CCCD-002")
    from dxlab.settings import get_settings

    assert stat.S_IMODE(get_settings().deid_key_file.stat().st_mode) == 0o600


def test_import_dicom_by_study_uid_and_errors(tmp_path):
    root, files = _write_tree(tmp_path)
    labels = tmp_path / "labels.csv"
    study = files["TRAN_THI_B/img1.dcm"].StudyInstanceUID
    labels.write_text(f"StudyInstanceUID,diagnosis\n{study},normal\n")
    manifest = import_dicom(root, labels=labels, task="tb_cxr", key_col="StudyInstanceUID", label_col="diagnosis")
    assert list(manifest.table["path"]) == ["TRAN_THI_B/img1.dcm"]
    labels.write_text("StudyInstanceUID,diagnosis\n1.2.3.4,normal\n")
    with pytest.raises(DatasetError, match="label rows match no DICOM image"):
        import_dicom(root, labels=labels, task="tb_cxr", key_col="StudyInstanceUID", label_col="diagnosis")
    with pytest.raises(DatasetError, match="unknown key column"):
        import_dicom(root, labels=labels, task="tb_cxr", key_col="PatientID")


def test_cli_data_import_dicom(tmp_path, capsys):
    from dxlab.cli import main
    from dxlab.datasets.manifest import Manifest

    root, files = _write_tree(tmp_path)
    labels = tmp_path / "labels.csv"
    sop = files["NGUYEN_VAN_A/img1.dcm"].SOPInstanceUID
    labels.write_text(f"SOPInstanceUID,label\n{sop},tb\n")
    out = tmp_path / "manifest.csv"
    assert main(["data", "import", "dicom", str(root), "--labels", str(labels), "--key-col", "SOPInstanceUID",
                 "--task", "tb_cxr", "--out", str(out), "--json"]) == 0
    manifest = Manifest.load(out)
    assert list(manifest.table["path"]) == ["NGUYEN_VAN_A/img1.dcm"] and "CCCD" not in out.read_text()
    assert main(["data", "import", "dicom", str(root), "--task", "tb_cxr", "--out", str(out)]) == 2
    assert "needs --labels" in capsys.readouterr().err
