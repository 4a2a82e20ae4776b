"""The deploy and heatmap commands: registered, params sections validated up front, deploy a no-op without a cohort."""

import json

import pytest

from slidemil.pipeline.cli import build_parser, main


def test_commands_and_their_options_are_registered():
    parser = build_parser()
    args = parser.parse_args(["deploy", "--cohort", "new.csv", "--features", "f.zarr", "--head", "abmil"])
    assert (args.cohort, args.features, args.head) == ("new.csv", "f.zarr", ["abmil"])
    args = parser.parse_args(["heatmap", "--head", "clam_sb", "--slides", "a", "b", "--store", "s.zarr"])
    assert (args.head, args.slides, args.store) == ("clam_sb", ["a", "b"], "s.zarr")
    with pytest.raises(SystemExit):
        parser.parse_args(["heatmap"])  # --head is required


def test_deploy_without_a_cohort_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("task: {label: label}\ndeploy: {n_bootstrap: 10}\n")
    assert main(["deploy"]) == 0
    assert json.loads((tmp_path / "deploy/last.json").read_text()) == {"cohort": "", "output": ""}


@pytest.mark.parametrize(("text", "message"), [
    ("deploy: {cohrt: x.csv}", "unknown params key 'deploy.cohrt'; did you mean 'cohort'?"),
    ("heatmap: {top_k: 0}", "params key 'heatmap.top_k' must be greater than or equal to 1"),
    ("deploy: {exclude_training_patients: 'yes'}", "params key 'deploy.exclude_training_patients' must be"),
])
def test_sections_are_validated_before_any_stage(tmp_path, monkeypatch, caplog, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(f"task: {{label: label}}\n{text}\n")
    assert main(["split"]) == 2  # another stage: the typo is caught before it runs
    assert message in caplog.text
