"""The ``slidemil`` command line: one sub-command per stage.

Each stage lives in ``pipeline/stages/<name>.py`` and provides ``HELP`` (one line), ``SECTION`` (the
pydantic model of its ``params.yaml`` section, a :class:`slidemil.core.params.Section`; none for a stage
without a section), optionally ``add_arguments(parser)``, and
``run(params, args) -> int``. ``--help`` lists the section's keys, defaults and descriptions (a stage
whose section holds plug-in options gives its rows with ``help_rows()``).
A stage that can run outside a project folder sets ``NEEDS_PARAMS = False``; one that imports neither torch
nor scikit-learn sets ``CHECKS_PLUGINS = False`` (the CLI then checks the head and probe names of the
params in the next stage, not in this one).
Stage modules keep heavy imports (torch, mlflow, …) inside ``run`` so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from slidemil.core.errors import SlidemilError
from slidemil.core.params import load_params, read_section, section_defaults
from slidemil.pipeline.cohort_columns import check_cohort_columns

#: what an interrupted stage leaves (the Ctrl-C line); batch stages resume per slide
INTERRUPTED = {
    "tile": "finished slides are kept", "extract": "finished slides are kept", "deploy": "finished slides are kept",
    "train": "the previous complete fold models stay in models/ (a run replaces them only when all folds are done)",
}

STAGES = {
    "tile": "slidemil.pipeline.stages.tile",
    "extract": "slidemil.pipeline.stages.extract",
    "import-features": "slidemil.pipeline.stages.import_features",
    "split": "slidemil.pipeline.stages.split",
    "train": "slidemil.pipeline.stages.train",
    "probe": "slidemil.pipeline.stages.probe",
    "zeroshot": "slidemil.pipeline.stages.zeroshot",
    "report": "slidemil.pipeline.stages.report",
    "deploy": "slidemil.pipeline.stages.deploy",
    "heatmap": "slidemil.pipeline.stages.heatmap",
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
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True, parser_class=_StageParser)
    common = _common_options()
    for name, module_name in STAGES.items():
        module = importlib.import_module(module_name)
        stage_parser = sub.add_parser(
            name, help=module.HELP, description=module.__doc__, parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        stage_parser.params_help = (name, module)
        if hasattr(module, "add_arguments"):
            module.add_arguments(stage_parser)
        stage_parser.set_defaults(_module=module)
    return parser


class _StageParser(argparse.ArgumentParser):
    """A stage's parser; its params section is listed below the options, built only when help is shown
    (listing the probes' options imports scikit-learn)."""

    params_help: tuple[str, object] | None = None

    def format_help(self) -> str:
        if self.params_help is not None and self.epilog is None:
            self.epilog = _params_help(*self.params_help)
        return super().format_help()


def _params_help(name: str, module) -> str | None:
    """The stage's params keys with defaults (and descriptions, for a pydantic section), for ``--help``."""
    section = getattr(module, "SECTION", None)
    if hasattr(module, "help_rows"):  # a section with plug-in options (probe.probe_kwargs.<probe>.*)
        rows = module.help_rows()
    elif section is not None:
        rows = section_defaults(section)
    else:
        return None
    lines = [f"params.yaml `{name}:` keys (defaults; change one with --set {name}.KEY=VALUE):"]
    for key, default, text in rows:
        lines.append(f"  {key} = {default!r}" + (f"\n      {text}" if text else ""))
    return "\n".join(lines)


def validate_sections(params: dict, plugins: bool = True) -> None:
    """Check every section of the params (unknown or misspelled keys, wrong types, values out of range)
    before any stage works.

    A stage reads its own section again; this catches a typo in a later stage's section before an earlier,
    long stage runs. ``plugins`` adds the checks against the plug-in registries (``train.heads`` /
    ``head_kwargs`` build each head: torch; ``probe.probes`` / ``probe_kwargs``: scikit-learn); the CLI
    skips them for a stage module with ``CHECKS_PLUGINS = False``. Raises ParamsError.
    """
    from slidemil.pipeline.tracking import MlflowSection
    from slidemil.splits.task import TaskSection

    models = {"task": TaskSection, "mlflow": MlflowSection}
    for name, module_name in STAGES.items():
        module = importlib.import_module(module_name)
        if getattr(module, "SECTION", None) is not None:
            models[name] = module.SECTION
    sections = {name: read_section(params, name, model, plugins=plugins) for name, model in models.items()}
    if plugins and params.get("train") and "train" in sections:  # MIL heads and their options (builds each head once, small; imports torch)
        from slidemil.pipeline.stages.train import check_heads

        check_heads(list(sections["train"].heads), sections["train"].head_kwargs)


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
            validate_sections(params, plugins=getattr(args._module, "CHECKS_PLUGINS", True))
            check_cohort_columns(params)  # a typo'd label column stops any stage at once
        else:
            params = {}
        from tqdm.contrib.logging import logging_redirect_tqdm  # here: `slidemil --help` does not need it

        with logging_redirect_tqdm():  # log lines above the progress bars, not inside them
            return int(args._module.run(params, args) or 0)
    except SlidemilError as exc:
        log.error("%s", exc, exc_info=args.verbose)
        return 2
    except KeyboardInterrupt:
        kept = INTERRUPTED.get(args.stage, "finished outputs are kept")
        log.error("interrupted; %s; re-run to resume", kept, exc_info=args.verbose)
        return 130
    except Exception as exc:  # a bug or an unforeseen failure: one line, the traceback with -v
        if args.verbose:
            raise
        log.error("%s failed: %s: %s (re-run with -v for the traceback)", args.stage, type(exc).__name__, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
