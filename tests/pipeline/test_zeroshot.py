"""CONCH zero-shot: prompt averaging, MI-Zero top-k pooling, tokenizer checks, the stage (with a stub CONCH)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from slidemil.core.errors import ParamsError
from slidemil.pipeline.zeroshot import (
    TOKENIZER_SHA256,
    Prompts,
    class_text_embeddings,
    load_prompts,
    patch_logits,
    resolve_tokenizer,
    scores_to_proba,
    slide_scores,
    topk_pool,
)

REPO = Path(__file__).resolve().parents[2]


def test_topk_pool_ranks_each_class_independently():
    logits = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.7], [0.4, 0.0]])  # (N=4 patches, C=2)
    np.testing.assert_allclose(topk_pool(logits, 1), [0.9, 0.8])
    np.testing.assert_allclose(topk_pool(logits, 2), [(0.9 + 0.5) / 2, (0.8 + 0.7) / 2])
    np.testing.assert_allclose(topk_pool(logits, 100), logits.mean(dim=0))  # k clipped to N
    with pytest.raises(ValueError, match="k ≥ 1"):
        topk_pool(logits, 0)


def test_patch_logits_and_slide_scores_match_numpy():
    rng = np.random.default_rng(0)
    f, proj = rng.normal(size=(6, 8)), rng.normal(size=(8, 8))
    w = rng.normal(size=(8, 3))
    w /= np.linalg.norm(w, axis=0)
    image = f @ proj
    expected = (image / np.linalg.norm(image, axis=1, keepdims=True)) @ w  # (6, 3) cosine
    got = patch_logits(f.astype(np.float32), torch.tensor(proj, dtype=torch.float32), torch.tensor(w, dtype=torch.float32))
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    scores = slide_scores(f, torch.tensor(proj), torch.tensor(w), topk=[1, 3])
    np.testing.assert_allclose(scores[1], expected.max(axis=0), atol=1e-5)
    np.testing.assert_allclose(scores[3], np.sort(expected, axis=0)[-3:].mean(axis=0), atol=1e-5)
    one = slide_scores(f[:1], torch.tensor(proj), torch.tensor(w), topk=[1, 5])  # ROI: a 1-patch bag
    np.testing.assert_allclose(one[1], one[5])
    np.testing.assert_allclose(one[1], expected[0], atol=1e-5)


def test_scores_to_proba_is_scaled_softmax():
    scores = np.array([[0.2, 0.3], [0.1, -0.1]])
    e = np.exp(scores * np.exp(2.0))
    np.testing.assert_allclose(scores_to_proba(scores, 2.0), e / e.sum(axis=1, keepdims=True))


def test_prompt_averaging_is_joint_over_synonyms_and_templates():
    prompts = Prompts({"tumor": ["carcinoma", "tumour cells"], "normal": ["healthy tissue"]},
                      ["CLASSNAME.", "an H&E image of CLASSNAME."])
    table: dict[str, torch.Tensor] = {}
    seen: list[list[str]] = []

    def encode(texts):  # a stub text tower: a fixed random, unnormalised vector per sentence
        seen.append(list(texts))
        for t in texts:
            seed = int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)
            table.setdefault(t, torch.randn(5, generator=torch.Generator().manual_seed(seed)) * (1 + len(t)))
        return torch.stack([table[t] for t in texts])

    w = class_text_embeddings(encode, prompts, ["normal", "tumor"])  # (D=5, C=2), task class order
    assert w.shape == (5, 2)
    assert seen[1] == ["carcinoma.", "an H&E image of carcinoma.", "tumour cells.", "an H&E image of tumour cells."]
    for j, name in enumerate(["normal", "tumor"]):
        unit = [table[t] / table[t].norm() for t in prompts.texts(name)]
        mean = torch.stack(unit).mean(dim=0)
        torch.testing.assert_close(w[:, j], mean / mean.norm())
    with pytest.raises(ParamsError, match="no entry for class"):
        class_text_embeddings(encode, prompts, ["normal", "lymphoma"])


def test_project_prompt_file_covers_demo_classes():
    prompts = load_prompts(REPO / "prompts" / "label.yaml")
    cohort = pd.read_csv(REPO / "demo" / "cohort.csv", dtype=str, keep_default_na=False)
    assert set(cohort["label"]) - {""} <= set(prompts.classnames)
    assert all("CLASSNAME" in t for t in prompts.templates)
    assert len(prompts.texts("dense")) == len(prompts.classnames["dense"]) * len(prompts.templates)


def test_load_prompts_rejects_bad_files(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("classes: {a: [x]}\ntemplates: ['no placeholder']\n")
    with pytest.raises(ParamsError, match="CLASSNAME"):
        load_prompts(bad)
    bad.write_text("classes: {a: []}\ntemplates: ['CLASSNAME']\n")
    with pytest.raises(ParamsError, match="synonyms"):
        load_prompts(bad)
    with pytest.raises(ParamsError, match="not found"):
        load_prompts(tmp_path / "missing.yaml")


def test_missing_tokenizer_gives_clear_error(tmp_path):
    with pytest.raises(ParamsError) as err:
        resolve_tokenizer(str(tmp_path / "conch_byte_level_bpe_uncased.json"), environ={})
    message = str(err.value)
    assert "not found" in message and "MahmoodLab/conch" in message and "conch-fork" in message
    assert "conch/open_clip_custom/tokenizers/conch_byte_level_bpe_uncased.json" in message
    with pytest.raises(ParamsError, match="CONCH_TOKENIZER"):
        resolve_tokenizer("", environ={"CONCH_TOKENIZER": str(tmp_path / "nope.json")})


def test_tokenizer_sha_is_checked(tmp_path):
    fake = tmp_path / "tok.json"
    fake.write_text("{}")
    with pytest.raises(ParamsError, match="sha256"):
        resolve_tokenizer(str(fake), environ={})
    assert resolve_tokenizer("", environ={}) is None
    assert TOKENIZER_SHA256 == "a3861e67c64d32670eb6725a8e52d7dbdd2a06646a4a3c7463052ae7110760fb"


# ---- the stage ---------------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, monkeypatch, helpers):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("CONCH_TOKENIZER", raising=False)
    return tmp_path


def test_stage_skips_without_conch_features(project, helpers):
    helpers.write_project(project, encoder_id="uni_v1", weights="ab" * 32)
    assert helpers.run_stage("zeroshot") == 0
    out = json.loads((project / "metrics/zeroshot.json").read_text())
    assert "uni_v1" in out["skipped"] and "conch_v1" in out["skipped"]


def test_stage_skips_before_extract(project, helpers):
    import shutil

    helpers.write_project(project)
    shutil.rmtree(project / "data/features")  # extract has not run yet
    assert helpers.run_stage("zeroshot") == 0
    out = json.loads((project / "metrics/zeroshot.json").read_text())
    assert out["skipped"] == "no feature store at data/features/conch_v1.zarr: run `slidemil extract` first"


def test_stage_skips_without_tokenizer_and_errors_on_missing_file(project, helpers):
    helpers.write_project(project)
    assert helpers.run_stage("zeroshot") == 0
    assert "tokenizer" in json.loads((project / "metrics/zeroshot.json").read_text())["skipped"]
    with pytest.raises(ParamsError, match="MahmoodLab/conch"):
        helpers.run_stage("zeroshot", ["zeroshot.tokenizer=missing/tok.json"])


class _StubConch(torch.nn.Module):
    """A tiny stand-in for CONCH: texts mentioning 'tumo' embed along +1, others along −1 (8-d)."""

    def __init__(self):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(1.5))
        self.visual = torch.nn.Module()
        self.visual.proj_contrast = torch.nn.Parameter(torch.eye(8))
        self.table = torch.nn.Embedding(2, 8)
        self.table.weight.data = torch.stack([-torch.ones(8), torch.ones(8)])

    def encode_text(self, ids, normalize=True):
        x = self.table(ids[:, 0])
        return torch.nn.functional.normalize(x, dim=-1) if normalize else x


def test_stage_runs_mizero_per_k_on_each_fold(project, helpers, monkeypatch):
    import slidemil.extract.conch
    import slidemil.extract.encoders
    import slidemil.pipeline.zeroshot

    helpers.write_project(project)
    (project / "prompts").mkdir()
    (project / "prompts/label.yaml").write_text(
        "classes: {benign: [benign tissue, normal mucosa], tumor: [tumour, carcinoma tumor]}\n"
        "templates: ['CLASSNAME.', 'an image of CLASSNAME.']\n"
    )
    stub = _StubConch()
    monkeypatch.setattr(slidemil.pipeline.zeroshot, "resolve_tokenizer", lambda param, environ=None: Path("tok.json"))
    monkeypatch.setattr(slidemil.extract.conch, "tokenize",
                        lambda texts, f: torch.tensor([[int("tumo" in t)] + [0] * 127 for t in texts]))
    monkeypatch.setattr(slidemil.extract.encoders, "create_encoder", lambda name, checkpoint=None, device="cpu":
                        type("E", (), {"weights_sha256": checkpoint, "model": stub})())
    assert helpers.run_stage("zeroshot") == 0
    out = json.loads((project / "metrics/zeroshot.json").read_text())
    assert out["skipped"] is False and set(out) == {"skipped", "auroc"} and set(out["auroc"]) == {"top1", "top2"}
    for k in (1, 2):
        metrics = json.loads((project / f"predictions/zeroshot@top{k}.details.json").read_text())
        assert metrics["test/auroc_mean"] == out["auroc"][f"top{k}"] > 0.9
        assert metrics["test/n_usable_folds"] == 3
    # one slide by hand: top-2 of each class over its patches, softmax(score · e^1.5)
    from slidemil.extract.store import open_features

    feats = open_features("data/features/conch_v1.zarr").load("s03")[0]
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    w = np.stack([-np.ones(8), np.ones(8)], axis=1) / np.sqrt(8)
    score = np.sort(unit @ w, axis=0)[-2:].mean(axis=0)
    e = np.exp(score * np.exp(1.5))
    preds = pd.read_csv("predictions/zeroshot@top2.csv", dtype={"slide_id": str}).set_index("slide_id")
    np.testing.assert_allclose(preds.loc["s03", ["prob_benign", "prob_tumor"]].to_numpy(float), e / e.sum(), atol=1e-5)
