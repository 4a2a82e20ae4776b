"""The ``slidemil`` command line: one sub-command per stage.

Each stage lives in ``pipeline/stages/<name>.py`` and provides ``HELP`` (one line), ``DEFAULTS`` (its
``params.yaml`` section), optionally ``add_arguments(parser)``, and ``run(params, args) -> int``.
A stage that can run outside a project folder sets ``NEEDS_PARAMS = False``.
Stage modules keep heavy imports (torch, mlflow, …) inside ``run`` so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from slidemil.core.errors import SlidemilError
from slidemil.core.params import load_params, stage_params
from slidemil.pipeline.cohort_columns import check_cohort_columns

STAGES = {
    "tile": "slidemil.pipeline.stages.tile",
    "extract": "slidemil.pipeline.stages.extract",
    "import-features": "slidemil.pipeline.stages.import_features",
    "split": "slidemil.pipeline.stages.split",
    "train": "slidemil.pipeline.stages.train",
    "probe": "slidemil.pipeline.stages.probe",
    "zeroshot": "slidemil.pipeline.stages.zeroshot",
    "report": "slidemil.pipeline.stages.report",
}

log = logging.getLogger("slidemil")


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="params file (default: ./params.yaml)")
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param, e.g. --set tile.target_mpp=1.0 (repeatable; same syntax as dvc exp run -S)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per stage (modules imported to read their options)."""
    parser = argparse.ArgumentParser(
        prog="slidemil",
        description="Whole-slide image pipeline: tile → extract → split → train / probe / zeroshot → report. "
        "Run from the project folder; every stage reads params.yaml there.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    common = _common_options()
    for name, module_name in STAGES.items():
        module = importlib.import_module(module_name)
        stage_parser = sub.add_parser(
            name, help=module.HELP, description=module.__doc__, parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if hasattr(module, "add_arguments"):
            module.add_arguments(stage_parser)
        stage_parser.set_defaults(_module=module)
    return parser


def validate_sections(params: dict) -> None:
    """Check every section of the params (unknown or misspelled keys, wrong types) before any stage works.

    A stage validates its own section again with its extra rules; this catches a typo in a later
    stage's section before an earlier, long stage runs. Raises ParamsError.
    """
    from slidemil.pipeline.tracking import MLFLOW_DEFAULTS
    from slidemil.splits.task import TASK_DEFAULTS

    sections = {"task": TASK_DEFAULTS, "mlflow": MLFLOW_DEFAULTS}
    for name, module_name in STAGES.items():
        defaults = getattr(importlib.import_module(module_name), "DEFAULTS", None)
        if defaults:
            sections[name] = defaults
    for section, defaults in sections.items():
        stage_params(params, section, defaults)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``slidemil``; returns the process exit code.

    2 on a user error (:class:`SlidemilError`), 130 on Ctrl-C, 1 on any other failure; each is one log
    line, with the traceback under ``-v``.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        needs_params = getattr(args._module, "NEEDS_PARAMS", True)
        if needs_params or Path(args.params).is_file():
            params = load_params(args.params, args.overrides)
            validate_sections(params)
            check_cohort_columns(params)  # a typo'd label column stops any stage at once
        else:
            params = {}
        with logging_redirect_tqdm():  # log lines above the progress bars, not inside them
            return int(args._module.run(params, args) or 0)
    except SlidemilError as exc:
        log.error("%s", exc, exc_info=args.verbose)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; finished slides are kept; re-run to resume", exc_info=args.verbose)
        return 130
    except Exception as exc:  # a bug or an unforeseen failure: one line, the traceback with -v
        if args.verbose:
            raise
        log.error("%s failed: %s: %s (re-run with -v for the traceback)", args.stage, type(exc).__name__, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
