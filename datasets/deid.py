"""De-identification of DICOM files: PS3.15 Annex E, Basic Application Level Confidentiality Profile.

The profile is Table E.1-1 of **DICOM PS3.15 2024b**, kept as data in
``deid_profile.csv`` (one row per attribute: tag, keyword, name, Basic
Profile action). What each action does here:

| action  | here                                                                            |
|---------|---------------------------------------------------------------------------------|
| X       | removed                                                                         |
| Z       | zero-length value (a sequence: zero items)                                      |
| D       | a dummy value of the VR (``ANONYMIZED``, ``19000101``, ``0``...); a sequence: zero items |
| U       | each UID replaced by ``2.25.<128 bits of HMAC-SHA256(key, uid)>``: the same UID always gets the same new UID under one key |
| X/Z, Z/D, X/Z/D | Z (zero length keeps Type 2 conformance and leaks nothing)               |
| X/D     | D (keeps Type 1 conformance)                                                    |
| X/Z/U*  | the sequence is kept and its items cleaned: their instance UIDs are replaced    |
| K (any attribute not in the table) | kept; sequences are walked and their items cleaned by the same rules |

Beyond the table, and on purpose:

- every private attribute (odd group) is removed, at every depth (the table's
  ``(gggg,eeee)`` row; the Retain Safe Private option is not offered);
- curve groups ``(50xx,xxxx)`` and whole overlay groups ``(60xx,xxxx)`` are
  removed (the table lists Overlay Data and Comments; an overlay's label and
  description can hold text too, and an overlay without data is broken);
- DA and DT attributes that the table does not list are removed (or shifted);
- ``PatientID`` becomes a keyed pseudonym (HMAC-SHA256 of the PatientID under
  the site key), and ``PatientName`` the same pseudonym, so one patient keeps
  one pseudonym across studies and runs (an image without PatientID gets the
  pseudonym of ``study:<StudyInstanceUID>``; names are never used);
- the file meta is rebuilt (only SOP Class/Instance UID, transfer syntax and
  implementation UID/version), dropping e.g. Source Application Entity Title;
- pixel data are never touched; BurnedInAnnotation ``YES`` is refused unless
  ``allow_burned_in`` (the Clean Pixel Data option is not implemented).

With ``keep_dates_shifted`` (Retain Longitudinal Temporal Information with
Modified Dates Option, code 113107), every DA and DT value (listed or not,
except Patient's Birth Date/Time, which stay removed) is shifted by a per-patient
number of days (1 to 3650 days back, from the HMAC of the PatientID), and TM
values are kept (a whole-day shift leaves times of day unchanged); partial or
invalid dates are emptied. Without it, dates and times follow the table (removed,
emptied, or the dummy ``19000101``).

The record of what was done: (0012,0062) Patient Identity Removed = ``YES``,
(0012,0063) De-identification Method (text), (0012,0064) De-identification
Method Code Sequence with DCM 113100 (and 113107 when dates were shifted), and
(0028,0303) Longitudinal Temporal Information Modified = ``REMOVED`` or
``MODIFIED``.

The pseudonym map (pseudonym to original PatientID with its date offset, and
new UID to original UID) is what re-links results to patients: it is written
apart from the de-identified output, never into it.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import functools
import hashlib
import hmac
import io
import logging
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from dxlab import __version__
from dxlab.datasets.dicom import open_dicom
from dxlab.errors import DatasetError, DxlabError

log = logging.getLogger(__name__)

PROFILE_EDITION = "2024b"
PROFILE_TITLE = f"DICOM PS3.15 {PROFILE_EDITION} Annex E Basic Application Level Confidentiality Profile"
PROFILE_FILE = "deid_profile.csv"
#: Basic Profile actions of Table E.1-1 that the profile file may use.
ACTIONS = ("D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*")
#: How a compound action is carried out (see the module docstring).
RESOLVED = {"X/Z": "Z", "Z/D": "Z", "X/Z/D": "Z", "X/D": "D", "X/Z/U*": "U*"}

#: CID 7050 codes (DCM) for what was applied.
CODE_BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
CODE_MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")

MIN_KEY_BYTES = 16
MAX_SHIFT_DAYS = 3650

_TAG_PATIENT_ID = 0x00100020
_TAG_PATIENT_NAME = 0x00100010
_TAGS_NEVER_SHIFTED = {0x00100030, 0x00100032}  # Patient's Birth Date and Time
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_DUMMY = {
    "AE": "DXLAB", "AS": "000Y", "CS": "ANONYMIZED", "DA": "19000101", "DT": "19000101000000", "TM": "000000",
    "DS": "0", "IS": "0", "LO": "ANONYMIZED", "LT": "ANONYMIZED", "PN": "ANONYMIZED", "SH": "ANONYMIZED",
    "ST": "ANONYMIZED", "UC": "ANONYMIZED", "UT": "ANONYMIZED", "UR": "ANONYMIZED",
}


class DeidentificationError(DatasetError):
    """A file cannot be de-identified (burned-in annotation, no pixels, ...), or the set-up is wrong."""


# --------------------------------------------------------------------------- the profile table


@dataclass(frozen=True)
class ProfileRule:
    """One row of Table E.1-1: the attribute and its Basic Profile action."""

    tag: str
    keyword: str
    name: str
    action: str


@functools.lru_cache(maxsize=1)
def load_profile() -> tuple[ProfileRule, ...]:
    """The rows of Table E.1-1 (edition :data:`PROFILE_EDITION`) as shipped in ``deid_profile.csv``."""
    text = resources.files("dxlab.datasets").joinpath(PROFILE_FILE).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    rules = []
    for row in csv.DictReader(lines):
        if row["action"] not in ACTIONS:
            raise DeidentificationError(f"profile row {row['tag']} has action {row['action']!r}; expected one of {', '.join(ACTIONS)}", PROFILE_FILE)
        rules.append(ProfileRule(row["tag"], row["keyword"], row["name"], row["action"]))
    return tuple(rules)


@functools.lru_cache(maxsize=1)
def _actions_by_tag() -> dict[int, str]:
    out: dict[int, str] = {}
    for rule in load_profile():
        if "x" in rule.tag:
            continue  # repeating groups (curves, overlays) are removed whole by _walk
        out[int(rule.tag.strip("()").replace(",", ""), 16)] = rule.action
    return out


# --------------------------------------------------------------------------- the key


def load_key(path: str | Path | None = None, *, create: bool = True) -> bytes:
    """The site secret for keyed pseudonyms, from ``path`` or the settings' key file.

    A missing file is created (when ``create``) with 32 random bytes (hex) and
    permissions 0600. Keep it secret and backed up: without it the same patient
    no longer gets the same pseudonym.
    """
    if path is None:
        from dxlab.settings import get_settings

        path = get_settings().deid_key_file
    path = Path(path).expanduser()
    if path.is_dir():
        raise DeidentificationError("the de-identification key file is a folder; expected a file", path)
    if not path.exists():
        if not create:
            raise DeidentificationError("de-identification key file not found (set DXLAB_DEID_KEY_FILE or pass --key-file)", path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        os.chmod(path, 0o600)
        log.warning("created a new de-identification key at %s; keep it secret and back it up", path)
    elif path.stat().st_mode & 0o077:
        log.warning("%s: the de-identification key is readable by other users; run 'chmod 600 %s'", path, path)
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise DeidentificationError(f"the de-identification key holds {len(key)} bytes; expected at least {MIN_KEY_BYTES}", path)
    return key


# --------------------------------------------------------------------------- de-identifying a dataset


@dataclass
class DeidMap:
    """What a :class:`Deidentifier` replaced, for the pseudonym map."""

    patients: dict[str, str] = field(default_factory=dict)  # pseudonym -> original PatientID
    offsets: dict[str, int] = field(default_factory=dict)  # pseudonym -> days added to dates
    uids: dict[str, str] = field(default_factory=dict)  # new UID -> original UID


def patient_basis(patient_id: str, study_uid: str) -> str:
    """What a patient's pseudonym is derived from: the PatientID, else ``study:<StudyInstanceUID>``.

    Names are never used (``Anonymized`` or ``^`` would merge unrelated people);
    an image without PatientID is its study's own pseudo-patient.
    """
    patient_id = patient_id.strip()
    if patient_id:
        return patient_id
    study_uid = study_uid.strip()
    return f"study:{study_uid}" if study_uid else ""


class Deidentifier:
    """Applies the Basic Profile under one key; keeps the map of what it replaced.

    >>> deid = Deidentifier(b"0123456789abcdef0123")
    >>> deid.pseudonym("12345") == deid.pseudonym("12345")
    True
    """

    def __init__(self, key: bytes, *, keep_dates_shifted: bool = False, allow_burned_in: bool = False) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise DeidentificationError(f"key of {len(key)} bytes; expected at least {MIN_KEY_BYTES}")
        self._key = bytes(key)
        self.keep_dates_shifted = keep_dates_shifted
        self.allow_burned_in = allow_burned_in
        self.mapping = DeidMap()

    # -- keyed derivations ---------------------------------------------------
    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\x00{value}".encode("utf-8"), hashlib.sha256).digest()

    def pseudonym(self, patient_id: str) -> str:
        """The keyed pseudonym of a PatientID: ``DX`` + 20 hex digits (80 bits)."""
        pseudonym = "DX" + self._digest("patient", patient_id.strip()).hex()[:20].upper()
        self.mapping.patients.setdefault(pseudonym, patient_id.strip())
        return pseudonym

    def new_uid(self, uid: str) -> str:
        """The replacement of a UID: ``2.25.`` + the first 128 bits of its HMAC, as an integer."""
        uid = str(uid).strip().rstrip("\x00")
        if not uid:
            return uid
        new = "2.25." + str(int.from_bytes(self._digest("uid", uid)[:16], "big"))
        self.mapping.uids.setdefault(new, uid)
        return new

    def date_offset_days(self, patient_id: str) -> int:
        """Days added to every date of this patient (negative: 1 to 3650 days back)."""
        return -(1 + int.from_bytes(self._digest("date-offset", patient_id.strip())[:8], "big") % MAX_SHIFT_DAYS)

    # -- the dataset ---------------------------------------------------------
    def deidentify(self, ds, *, label: str = "<dataset>"):
        """Return a de-identified copy of a pydicom ``Dataset`` (the input is left as it was)."""
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.sequence import Sequence
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

        burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
        if burned == "YES" and not self.allow_burned_in:
            raise DeidentificationError(
                "BurnedInAnnotation is YES: the pixels may show identifying text, which this profile does not clean; "
                "check the images and pass --allow-burned-in (allow_burned_in=True) to de-identify them anyway",
                label,
            )
        basis = patient_basis(str(ds.get("PatientID", "") or ""), str(ds.get("StudyInstanceUID", "") or ""))
        pseudonym = self.pseudonym(basis)
        offset = self.date_offset_days(basis)
        if self.keep_dates_shifted:
            self.mapping.offsets[pseudonym] = offset

        out = copy.deepcopy(ds)
        meta = getattr(ds, "file_meta", None)
        self._walk(out, offset)

        out.PatientID = pseudonym
        out.PatientName = pseudonym
        out.PatientIdentityRemoved = "YES"
        dates = "dates shifted per patient" if self.keep_dates_shifted else "dates removed"
        out.DeidentificationMethod = [f"dxlab {__version__}", f"PS3.15 {PROFILE_EDITION} E.1 Basic Profile",
                                      "keyed pseudonyms (HMAC-SHA256)", dates]
        codes = [CODE_BASIC_PROFILE] + ([CODE_MODIFIED_DATES] if self.keep_dates_shifted else [])
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        out.DeidentificationMethodCodeSequence = Sequence(items)
        out.LongitudinalTemporalInformationModified = "MODIFIED" if self.keep_dates_shifted else "REMOVED"

        new_meta = FileMetaDataset()
        if "SOPClassUID" in out:
            new_meta.MediaStorageSOPClassUID = out.SOPClassUID
        if "SOPInstanceUID" in out:
            new_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        if meta is not None and meta.get("TransferSyntaxUID"):
            new_meta.TransferSyntaxUID = meta.TransferSyntaxUID
        new_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        new_meta.ImplementationVersionName = f"DXLAB {__version__}"[:16]
        out.file_meta = new_meta
        return out

    def _walk(self, ds, offset: int) -> None:
        from pydicom.sequence import Sequence

        actions = _actions_by_tag()
        for elem in list(ds):
            tag = int(elem.tag)
            group = tag >> 16
            if elem.tag.is_private:
                del ds[elem.tag]
                continue
            if group % 2 == 0 and (0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF):
                del ds[elem.tag]  # curves and overlays, whole groups
                continue
            if tag in _PIXEL_TAGS:
                continue
            if tag & 0xFFFF == 0:
                del ds[elem.tag]  # group lengths (retired) would be stale after the changes
                continue
            vr = elem.VR
            action = actions.get(tag)
            if tag == _TAG_PATIENT_ID:
                value = str(elem.value or "").strip()
                elem.value = self.pseudonym(value) if value else ""
                continue
            if self.keep_dates_shifted and vr in ("DA", "DT", "TM") and tag not in _TAGS_NEVER_SHIFTED:
                self._shift(elem, offset)
                continue
            if action is None:
                if vr == "SQ":
                    for item in elem.value or []:
                        self._walk(item, offset)
                elif vr in ("DA", "DT"):
                    del ds[elem.tag]  # dates the table does not list: removed all the same
                continue
            action = RESOLVED.get(action, action)
            if action == "X":
                del ds[elem.tag]
            elif action in ("Z", "D") and vr == "SQ":
                elem.value = Sequence([])
            elif action == "Z":
                elem.value = _empty(vr)
            elif action == "D":
                elem.value = _dummy(vr, elem, self)
            elif action == "U":
                elem.value = self._replace_uids(elem.value)
            elif action == "U*" or action in ("K", "C"):
                if vr == "SQ":
                    for item in elem.value or []:
                        self._walk(item, offset)
                elif vr == "UI":
                    elem.value = self._replace_uids(elem.value)

    def _replace_uids(self, value):
        if value is None or value == "":
            return value
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            return [self.new_uid(v) for v in value]
        return self.new_uid(value)

    def _shift(self, elem, offset: int) -> None:
        if elem.VR == "TM" or elem.value in (None, ""):
            return
        values = elem.value if type(elem.value).__name__ == "MultiValue" or isinstance(elem.value, list) else [elem.value]
        shifted = [_shift_value(str(v), elem.VR, offset) for v in values]
        if any(s == "" for s in shifted):
            elem.value = ""
        else:
            elem.value = shifted if len(shifted) > 1 else shifted[0]


def _empty(vr: str):
    if vr in _TEXT_VRS:
        return ""
    if vr in _BINARY_VRS:
        return b""
    return None


def _dummy(vr: str, elem, deid: Deidentifier):
    if vr == "UI":
        return deid._replace_uids(elem.value) or "2.25.0"
    if vr in _DUMMY:
        return _DUMMY[vr]
    if vr in _BINARY_VRS:
        return b"\x00\x00"
    if vr in ("FL", "FD"):
        return 0.0
    if vr in ("SL", "SS", "UL", "US", "SV", "UV"):
        return 0
    return None


_DA = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")


def _shift_value(value: str, vr: str, offset: int) -> str:
    """Shift a DA or DT value by ``offset`` days; '' when it is not a full date."""
    value = value.strip()
    match = _DA.match(value)
    if not match:
        return ""
    try:
        day = dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3))) + dt.timedelta(days=offset)
    except (ValueError, OverflowError):
        return ""
    rest = value[match.end():] if vr == "DT" else ""
    return day.strftime("%Y%m%d") + rest


# --------------------------------------------------------------------------- files and trees


@dataclass
class FileResult:
    """The outcome for one input file: ``ok``, ``failed`` or ``skipped``."""

    source: str
    status: str
    output: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def deidentify_file(deid: Deidentifier, source: str | Path, out_dir: str | Path, *, taken: dict[Path, str] | None = None) -> Path:
    """De-identify one DICOM file into ``out_dir/<study>/<series>/<instance>.dcm`` (new UIDs).

    Output names are built from the new UIDs only, because input file and folder
    names often hold patient names, IDs or original UIDs. ``taken`` maps output
    paths already written in this batch to their sources: a second file with the
    same SOP Instance UID is refused rather than overwriting the first. Returns
    the written path.
    """
    source = Path(source)
    ds = open_dicom(source)
    if "PixelData" not in ds:
        raise DeidentificationError("no pixel data (7FE0,0010): not an image; only images are de-identified", source)
    if "SOPClassUID" not in ds:
        raise DeidentificationError("no SOP Class UID (0008,0016): a conformant file cannot be written", source)
    if not str(ds.get("SOPInstanceUID", "") or "").strip():
        # a deterministic stand-in, so that reruns give the same output name
        ds.SOPInstanceUID = "2.25." + str(int(hashlib.sha256(source.read_bytes()).hexdigest()[:32], 16))
    out = deid.deidentify(ds, label=str(source))
    parts = [str(out.get(k, "") or "") or "unknown" for k in ("StudyInstanceUID", "SeriesInstanceUID")]
    target = Path(out_dir).joinpath(*parts, f"{out.SOPInstanceUID}.dcm")
    if taken is not None and target in taken:
        raise DeidentificationError(f"same SOP Instance UID as {taken[target]} (a duplicate or a modified copy); not written", source)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    try:
        out.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_locations(in_dir: Path, out_dir: Path, map_path: Path | None) -> None:
    """Refuse set-ups that would write into the input or put the map beside the output."""
    if not in_dir.is_dir():
        raise DeidentificationError("input folder not found", in_dir)
    if _inside(out_dir, in_dir):
        raise DeidentificationError(f"the output folder {out_dir} is the input folder or inside it; choose a folder outside {in_dir}")
    if _inside(in_dir, out_dir):
        raise DeidentificationError(f"the input folder {in_dir} is inside the output folder {out_dir}; choose another output folder")
    if map_path is not None:
        if _inside(map_path, out_dir):
            raise DeidentificationError(f"the pseudonym map {map_path} would be inside the de-identified output {out_dir}; it must be kept apart")
        if _inside(map_path, in_dir):
            raise DeidentificationError(f"the pseudonym map {map_path} would be written inside the input folder {in_dir}, which is never modified")


def default_map_path(out_dir: Path) -> Path:
    """``$DXLAB_HOME/deid/<out name>-<hash of its path>.csv``: apart from the output, stable across reruns."""
    from dxlab.settings import get_settings

    tag = hashlib.sha256(str(out_dir).encode("utf-8")).hexdigest()[:8]
    return get_settings().home / "deid" / f"map-{out_dir.name}-{tag}.csv"


def _input_files(in_dir: Path) -> Iterable[Path]:
    for path in sorted(in_dir.rglob("*")):
        rel = path.relative_to(in_dir)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            yield path


def deidentify_tree(deid: Deidentifier, in_dir: str | Path, out_dir: str | Path, *, map_path: str | Path | None = None) -> dict[str, Any]:
    """De-identify every file below ``in_dir`` into ``out_dir``; returns the report.

    A file that fails is listed with its error and the batch goes on. The map
    (pseudonyms and UIDs back to the originals) is merged into ``map_path``
    (default :func:`default_map_path`), never inside ``out_dir``.
    """
    in_dir = Path(in_dir).expanduser().resolve()
    out_dir = Path(out_dir).expanduser().resolve()
    map_file = Path(map_path).expanduser().resolve() if map_path else default_map_path(out_dir)
    check_locations(in_dir, out_dir, map_file)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[FileResult] = []
    written: dict[Path, str] = {}
    for path in _input_files(in_dir):
        rel = path.relative_to(in_dir).as_posix()
        if path.name.upper() == "DICOMDIR":
            results.append(FileResult(rel, "skipped", error="DICOMDIR (a media index, not an image; it names patients and files)"))
            continue
        try:
            target = deidentify_file(deid, path, out_dir, taken=written)
        except DxlabError as exc:
            results.append(FileResult(rel, "failed", error=str(exc)))
            continue
        except Exception as exc:  # one unreadable or unwritable file must not stop the batch
            log.debug("de-identifying %s failed", path, exc_info=True)
            results.append(FileResult(rel, "failed", error=f"{path}: {type(exc).__name__}: {exc}"))
            continue
        out_rel = target.relative_to(out_dir).as_posix()
        written[target] = rel
        results.append(FileResult(rel, "ok", out_rel))
    write_map(deid.mapping, map_file)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "failed", "skipped")}
    return {
        "input": str(in_dir),
        "output": str(out_dir),
        "map": str(map_file),
        "profile": PROFILE_TITLE,
        "dates": "shifted per patient" if deid.keep_dates_shifted else "removed",
        "files": len(results),
        **counts,
        "results": [r.as_dict() for r in results],
    }


MAP_COLUMNS = ("kind", "new", "original", "date_offset_days")


def write_map(mapping: DeidMap, path: str | Path) -> Path:
    """Merge the replacements into a CSV map (mode 0600): patient rows and uid rows."""
    path = Path(path)
    rows: dict[tuple[str, str], dict[str, str]] = {}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                rows[(row["kind"], row["new"])] = row
    for pseudonym, original in mapping.patients.items():
        offset = mapping.offsets.get(pseudonym)
        rows[("patient", pseudonym)] = {"kind": "patient", "new": pseudonym, "original": original,
                                        "date_offset_days": "" if offset is None else str(offset)}
    for new, original in mapping.uids.items():
        rows[("uid", new)] = {"kind": "uid", "new": new, "original": original, "date_offset_days": ""}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MAP_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for key in sorted(rows):
        writer.writerow({c: rows[key].get(c, "") for c in MAP_COLUMNS})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(buffer.getvalue())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path
