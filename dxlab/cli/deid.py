"""``dxlab deid IN_DIR OUT_DIR``: de-identify a tree of DICOM files (PS3.15 Annex E Basic Profile)."""

from __future__ import annotations

import sys
from pathlib import Path

from dxlab.cli.output import add_json_flag, print_json, print_mapping, print_table

#: Exit status when some files could not be de-identified (the others were written).
EXIT_SOME_FAILED = 1


def register(areas) -> None:
    p = areas.add_parser(
        "deid",
        help="de-identify a folder of DICOM files for research (PS3.15 Annex E)",
        description="De-identify every DICOM file below IN_DIR into OUT_DIR with the DICOM PS3.15 Annex E Basic "
        "Application Level Confidentiality Profile: identifying attributes removed or emptied, private tags removed, "
        "UIDs replaced consistently, PatientID and PatientName replaced by keyed pseudonyms. Outputs are named "
        "OUT_DIR/<study UID>/<series UID>/<instance UID>.dcm from the new UIDs, so no input name leaks. "
        "The pseudonym map (to re-link results to patients) is written apart from OUT_DIR. Input files are never "
        "modified. Files that fail are listed with their error and the batch goes on; the exit status is 1 when any failed.",
    )
    p.add_argument("in_dir", type=Path, metavar="IN_DIR", help="folder of DICOM files (searched recursively)")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder for the de-identified files (outside IN_DIR)")
    p.add_argument("--key-file", type=Path, metavar="FILE",
                   help="secret key for pseudonyms and UIDs (default: DXLAB_DEID_KEY_FILE, i.e. $DXLAB_HOME/deid.key; created with mode 0600 when missing)")
    p.add_argument("--keep-dates-shifted", action="store_true",
                   help="keep dates, shifted by a per-patient offset (Retain Longitudinal Temporal Information with Modified Dates); default: dates removed")
    p.add_argument("--allow-burned-in", action="store_true",
                   help="also de-identify images whose BurnedInAnnotation is YES (their pixels may still show names: check them)")
    p.add_argument("--map", type=Path, metavar="FILE",
                   help="pseudonym map CSV to write or extend, outside OUT_DIR (default: $DXLAB_HOME/deid/map-<OUT_DIR name>-<hash>.csv)")
    add_json_flag(p)
    p.set_defaults(func=cmd_deid)


def cmd_deid(args) -> int:
    from dxlab.datasets.deid import Deidentifier, check_locations, deidentify_tree, load_key

    # Check the folders before a key file is created for a run that cannot start.
    check_locations(args.in_dir.expanduser().resolve(), args.out_dir.expanduser().resolve(),
                    args.map.expanduser().resolve() if args.map else None)
    deid = Deidentifier(load_key(args.key_file), keep_dates_shifted=args.keep_dates_shifted, allow_burned_in=args.allow_burned_in)
    report = deidentify_tree(deid, args.in_dir, args.out_dir, map_path=args.map)
    if args.json:
        print_json(report)
    else:
        rows = [[r["source"], r["status"], r["output"] if r["status"] == "ok" else r["error"]] for r in report["results"]]
        if rows:
            print_table(rows, ["source", "status", "output / error"])
            print()
        print_mapping({k: report[k] for k in ("profile", "dates", "output", "map", "files", "ok", "failed", "skipped")})
    if report["failed"]:
        print(f"dxlab: {report['failed']} of {report['files']} file(s) could not be de-identified (listed above)", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0
