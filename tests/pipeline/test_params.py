"""params.yaml loading, --set overrides and per-stage validation."""

import pytest

from slidemil.core.errors import ParamsError
from slidemil.core.params import apply_override, load_params


def test_override_parses_yaml_scalars_and_creates_sections():
    params = {"tile": {"target_mpp": 0.5}}
    apply_override(params, "tile.target_mpp=1.0")
    apply_override(params, "train.heads=[abmil, clam_sb]")
    apply_override(params, "tile.tissue.pen_filter=false")
    assert params == {"tile": {"target_mpp": 1.0, "tissue": {"pen_filter": False}}, "train": {"heads": ["abmil", "clam_sb"]}}


@pytest.mark.parametrize("bad", ["tile.target_mpp", "tile..x=1", "=3"])
def test_malformed_override_is_rejected(bad):
    with pytest.raises(ParamsError, match="--set"):
        apply_override({}, bad)


def test_load_params_rejects_unknown_top_level_and_missing_file(tmp_path):
    (tmp_path / "params.yaml").write_text("tile: {}\ntrian: {}\n")
    with pytest.raises(ParamsError, match="did you mean 'train'"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_load_params_applies_overrides(tmp_path):
    (tmp_path / "params.yaml").write_text("cohort: demo/cohort.csv\ntile:\n  target_mpp: 0.5\n")
    params = load_params(tmp_path / "params.yaml", ["tile.target_mpp=2", "cohort=other.csv"])
    assert params == {"cohort": "other.csv", "tile": {"target_mpp": 2}}


def test_cli_rejects_a_typo_in_a_later_stage_before_any_work(tmp_path, monkeypatch, caplog):
    from slidemil.pipeline.cli import main

    (tmp_path / "params.yaml").write_text("cohort: missing.csv\n")
    monkeypatch.chdir(tmp_path)
    assert main(["tile", "--set", "train.epocs=3"]) == 2
    assert "did you mean 'epochs'" in caplog.text
    assert not (tmp_path / "data").exists()  # nothing was tiled


# --- pydantic sections ---------------------------------------------------------------------------

def _models():
    from typing import Literal

    from pydantic import Field, StrictBool

    from slidemil.core.params import Section

    class Tissue(Section):
        mask_mpp: float = Field(8.0, gt=0, description="µm/px of the tissue mask")

    class Tile(Section):
        target_mpp: float = Field(0.5, gt=0, description="µm/px of the patches")
        patch_size: int = Field(512, ge=16)
        pen_filter: StrictBool = True
        batch_size: int | Literal["auto"] = "auto"
        tissue: Tissue = Field(default_factory=Tissue)

    return Tile


def test_read_section_validates_and_fills_defaults():
    from slidemil.core.params import read_section

    tile = read_section({"tile": {"patch_size": 256.0, "tissue": {"mask_mpp": 4}}}, "tile", _models())
    assert tile.patch_size == 256 and isinstance(tile.patch_size, int)  # dvc exp run -S writes 256.0
    assert tile.tissue.mask_mpp == 4.0 and tile.target_mpp == 0.5 and tile.batch_size == "auto"
    assert read_section({}, "tile", _models()).patch_size == 512


@pytest.mark.parametrize(
    "section,match",
    [
        ({"patch_sise": 256}, r"unknown params key 'tile\.patch_sise'; did you mean 'patch_size'"),
        ({"tissue": {"mask_mp": 4}}, r"'tile\.tissue\.mask_mp'; did you mean 'mask_mpp'"),
        ({"patch_size": 256.5}, r"'tile\.patch_size'.*256\.5"),
        ({"patch_size": 8}, r"'tile\.patch_size'.*greater than or equal to 16"),
        ({"pen_filter": "yes"}, r"'tile\.pen_filter'.*'yes'"),
        ({"batch_size": "big"}, r"'tile\.batch_size'"),
        ({"target_mpp": -1}, r"'tile\.target_mpp'.*greater than 0"),
    ],
)
def test_read_section_errors_name_the_dotted_key(section, match):
    from slidemil.core.params import read_section

    with pytest.raises(ParamsError, match=match):
        read_section({"tile": section}, "tile", _models())


def test_section_defaults_flatten_nested_models_for_help():
    from slidemil.core.params import section_defaults

    rows = {key: (default, text) for key, default, text in section_defaults(_models())}
    assert rows["tissue.mask_mpp"] == (8.0, "µm/px of the tissue mask")
    assert rows["patch_size"][0] == 512


# --- the project's sections ----------------------------------------------------------------------

def _project_sections():
    from slidemil.pipeline.stages import probe, report, split, train, zeroshot
    from slidemil.pipeline.tracking import MlflowSection
    from slidemil.splits.task import TaskSection

    return {"task": TaskSection, "split": split.SECTION, "train": train.SECTION, "probe": probe.SECTION,
            "zeroshot": zeroshot.SECTION, "report": report.SECTION, "mlflow": MlflowSection}


def test_every_section_field_is_described_and_the_repo_params_validate():
    from pathlib import Path

    from slidemil.core.params import read_section, section_defaults
    from slidemil.pipeline.cli import validate_sections

    for name, model in _project_sections().items():
        undescribed = [key for key, _, text in section_defaults(model) if not text]
        assert not undescribed, f"{name}: {undescribed}"
        model()  # the defaults are valid
    params = load_params(Path(__file__).parents[2] / "params.yaml")
    validate_sections(params)
    assert read_section(params, "probe", _project_sections()["probe"]).options("knn").n_neighbors == 5


def test_whole_number_floats_as_dvc_writes_them_and_strict_booleans(tmp_path):
    from slidemil.core.params import read_section
    from slidemil.pipeline.cli import validate_sections

    (tmp_path / "params.yaml").write_text("train: {epochs: 20}\n")
    params = load_params(tmp_path / "params.yaml", ["train.epochs=3.0", "split.n_folds=4.0", "zeroshot.topk=[1.0, 5]"])
    validate_sections(params)
    section = read_section(params, "train", _project_sections()["train"])
    assert section.epochs == 3 and isinstance(section.epochs, int)
    assert read_section(params, "zeroshot", _project_sections()["zeroshot"]).topk == [1, 5]
    for override, match in [("train.epochs=3.5", r"'train\.epochs'.*3\.5"),
                            ("train.amp=1", r"'train\.amp' must be a valid boolean, got 1"),
                            ("train.monitor=val/acc", r"'train\.monitor'.*'val/auroc' or 'val/loss'"),
                            ("split.val_fraction=1", r"'split\.val_fraction'.*less than 1"),
                            ("task.ordered=1", r"'task\.ordered'"),
                            ("probe.pooling=median", r"'probe\.pooling'"),
                            ("train.device=gpu", r"'train\.device'")]:
        with pytest.raises(ParamsError, match=match):
            validate_sections(load_params(tmp_path / "params.yaml", [override]))


@pytest.mark.parametrize("override,match", [
    ("probe.probe_kwargs.knn.k=3", r"unknown params key 'probe\.probe_kwargs\.knn\.k'; known keys: n_neighbors"),
    ("probe.probe_kwargs.linear.c_grid=[0.1, -1]", r"'probe\.probe_kwargs\.linear\.c_grid' must be greater than 0, got -1"),
    ("probe.probe_kwargs.lineer.c_grid=[1]", r"unknown probe\(s\) \['lineer'\]; did you mean 'linear'"),
    ("probe.probes=[linear, svm]", r"unknown probe\(s\) \['svm'\]"),
    ("split.seeds=[1, 1]", "distinct"),
])
def test_probe_options_and_cross_field_rules_are_checked_up_front(tmp_path, override, match):
    from slidemil.pipeline.cli import validate_sections

    (tmp_path / "params.yaml").write_text("task: {label: label}\n")
    with pytest.raises(ParamsError, match=match):
        validate_sections(load_params(tmp_path / "params.yaml", [override]))


def test_help_lists_keys_defaults_and_descriptions_from_the_models(capsys):
    from slidemil.pipeline.cli import build_parser

    for stage, expected in [("train", ["epochs = 20", "maximum training epochs per fold", "head_kwargs = {}"]),
                            ("probe", ["probe_kwargs.knn.n_neighbors = 20", "probe_kwargs.linear.class_weight"]),
                            ("report", ["json = 'reports/metrics.json'"]),
                            ("tile", ["target_mpp = 0.5", "tissue.method = 'auto'"])]:
        with pytest.raises(SystemExit):
            build_parser().parse_args([stage, "--help"])
        out = capsys.readouterr().out
        assert all(text in out for text in expected), (stage, out[-800:])


def test_plugin_names_are_checked_by_every_stage_but_tile_which_imports_neither_torch_nor_sklearn(tmp_path, real_data):
    import subprocess
    import sys

    from slidemil.pipeline.cli import validate_sections

    params = {"probe": {"probes": ["linaer"]}, "train": {"heads": ["abmil"]}}
    validate_sections(params, plugins=False)  # structure only: passes
    with pytest.raises(ParamsError, match=r"unknown probe\(s\) \['linaer'\]"):
        validate_sections(params)
    slide = real_data / "wsi-aperio-svs" / "CMU-1-Small-Region.svs"
    (tmp_path / "cohort.csv").write_text(f"slide_id,path,label\ns1,{slide},a\n")
    (tmp_path / "params.yaml").write_text("cohort: cohort.csv\ntile: {output: tiles}\nprobe: {probes: [linaer]}\n")
    script = ("import sys; from slidemil.pipeline.cli import main; code = main([sys.argv[1]]); "
              "print(code, 'sklearn' in sys.modules, 'torch' in sys.modules)")
    tile = subprocess.run([sys.executable, "-c", script, "tile"], cwd=tmp_path, capture_output=True, text=True)
    assert tile.stdout.split() == ["0", "False", "False"], tile.stderr
    split = subprocess.run([sys.executable, "-c", script, "split"], cwd=tmp_path, capture_output=True, text=True)
    assert split.stdout.split()[0] == "2" and "unknown probe(s) ['linaer']" in split.stderr
