"""Every user-facing failure of ``slidemil`` is one log line; ``-v`` gives the traceback."""

import logging

import pytest

from slidemil.core.errors import StoreError
from slidemil.pipeline import cli
from slidemil.pipeline.stages import report


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("task: {label: label}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _raise(exc):
    def run(params, args):
        raise exc
    return run


@pytest.mark.parametrize(("exc", "code", "line"), [
    (KeyboardInterrupt(), 130, "interrupted; finished outputs are kept; re-run to resume"),
    (StoreError("data/features is missing; run slidemil extract"), 2, "data/features is missing; run slidemil extract"),
    (ValueError("bad shape"), 1, "report failed: ValueError: bad shape (re-run with -v for the traceback)"),
])
def test_failure_is_one_line(project, monkeypatch, caplog, exc, code, line):
    monkeypatch.setattr(report, "run", _raise(exc))
    caplog.set_level(logging.INFO)
    assert cli.main(["report"]) == code
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [line]
    assert not errors[0].exc_info  # no traceback without -v


def test_verbose_shows_the_traceback(project, monkeypatch, caplog):
    monkeypatch.setattr(report, "run", _raise(KeyboardInterrupt()))
    assert cli.main(["report", "-v"]) == 130
    assert caplog.records[-1].exc_info is not None
    monkeypatch.setattr(report, "run", _raise(ValueError("bad shape")))
    with pytest.raises(ValueError, match="bad shape"):
        cli.main(["report", "-v"])
