"""The ``dxlab`` command line: one entry point with a subcommand per area.

Each area lives in its own module here and adds its subcommands with a
``register(subparsers)`` function. Errors that dxlab raises on purpose are
printed as one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dxlab import __version__
from dxlab.errors import DxlabError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    from dxlab.cli import data, deid, demo, serve, train

    parser = argparse.ArgumentParser(
        prog="dxlab",
        description="dxlab: data sets, training, and decision-support predictions for medical images.",
    )
    parser.add_argument("--version", action="version", version=f"dxlab {__version__}")
    areas = parser.add_subparsers(dest="area", metavar="COMMAND", required=True)
    for module in (data, deid, demo, train, serve):
        module.register(areas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # MLflow calls home unless told not to (see STANDARDS.md)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from dxlab.settings import configure_logging

        configure_logging()
        return int(args.func(args) or 0)
    except DxlabError as exc:
        print(f"dxlab: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("dxlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
