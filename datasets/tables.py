"""Reading the CSV and text files that data sets ship, with clear errors."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from dxlab.errors import DatasetError

log = logging.getLogger(__name__)


def read_table(path: str | Path, required: Iterable[str] = (), **kwargs) -> pd.DataFrame:
    """Read a CSV file as strings; a missing file or column names the file and the columns."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("CSV file not found", path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, **kwargs)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"unreadable CSV: {exc}", path) from exc
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DatasetError(
            f"missing column(s) {', '.join(repr(c) for c in missing)}; the file has {', '.join(repr(c) for c in table.columns)}",
            path,
        )
    return table


def find_files(root: str | Path, pattern: str | re.Pattern[str]) -> dict[str, Path]:
    """Every file under ``root`` whose name matches ``pattern`` fully, by name.

    A name found twice is an error (which copy is meant cannot be known).
    """
    root = Path(root)
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if regex.fullmatch(path.name) and path.is_file():
            if path.name in found:
                raise DatasetError(f"file name {path.name!r} occurs twice: {found[path.name]} and {path}", root)
            found[path.name] = path
    return found


def age_from_text(text: str) -> float | None:
    """Parse ages written as '045Y', '45 yrs', '45', '6 months'; None when absent."""
    match = re.search(r"(\d+(?:\.\d+)?)\s*([YyMmDd]?)", text or "")
    if not match:
        return None
    value, unit = float(match.group(1)), match.group(2).upper()
    return {"M": value / 12.0, "D": value / 365.25}.get(unit, value)


def sex_from_text(text: str) -> str:
    """Normalise 'M', 'male', 'Male', 'F', 'female', 'O' to 'male', 'female' or ''."""
    t = (text or "").strip().lower()
    if t in ("m", "male", "man"):
        return "male"
    if t in ("f", "female", "woman"):
        return "female"
    return ""


def files_for_rows(
    ids: Sequence[str], files: Mapping[str, Path], *, table: str | Path, root: str | Path, what: str = "image"
) -> list[Path | None]:
    """The file of each table row's id (``files`` maps ids to files), or None where it is absent.

    A partial download stays usable: rows without a file come back as None and
    are logged as one warning with their count. A table none of whose rows has
    a file is an error naming the table and the folder: then one of them is the
    wrong one.
    """
    if not ids:
        raise DatasetError("the table has no rows", table)
    found = [files.get(i) for i in ids]
    missing = [i for i, f in zip(ids, found) if f is None]
    if len(missing) == len(ids):
        raise DatasetError(f"none of its {len(ids)} {what}s (first {ids[0]!r}) has a file under {root}", table)
    if missing:
        log.warning(
            "%s: %d of %d %ss have no file under %s (a partial download?) and are left out; first: %s",
            table, len(missing), len(ids), what, root, ", ".join(missing[:3]),
        )
    return found
