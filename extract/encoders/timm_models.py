"""Registry entries built on timm: ``uni_v1``, ``resnet50_trunc``, ``timm`` (``timm:<model>``), ``tiny_test``
and ``nan_test``.

Weights come from a local checkpoint only (never downloaded); ``random[:seed]`` gives seeded random
weights for tests and benchmarks (``weights_sha256 = "random:<seed>"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import timm
import torch
from timm.data import resolve_data_config
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from slidemil.core.errors import ParamsError
from slidemil.core.hashing import file_sha256
from slidemil.extract.encoders.base import Encoder, resolve_precision
from slidemil.extract.encoders.checkpoint import CheckpointError, check_keys, read_state_dict
from slidemil.extract.encoders.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from slidemil.extract.encoders.registry import ENCODERS


def parse_random(checkpoint: str) -> int | None:
    """``"random"`` → 0, ``"random:<seed>"`` → seed, anything else → None."""
    if checkpoint == "random":
        return 0
    if checkpoint.startswith("random:") and checkpoint.removeprefix("random:").isdigit():
        return int(checkpoint.removeprefix("random:"))
    return None


def load_weights(
    name: str,
    make_model: Callable[[], nn.Module],
    checkpoint: str | Path | None,
    drop_prefixes: tuple[str, ...] = (),
) -> tuple[nn.Module, str, dict]:
    """Build a model and fill it from ``checkpoint`` → (model, weights_sha256, load report).

    Keys under ``drop_prefixes`` (classifier, truncated layers) are dropped and reported; the rest must
    match the model's state dict exactly (CheckpointError names the key otherwise).
    """
    if checkpoint is None:
        raise CheckpointError(
            f"encoder {name} needs a local checkpoint file (state dict); nothing is downloaded. "
            "Use checkpoint='random[:seed]' for random test weights"
        )
    seed = parse_random(str(checkpoint))
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return make_model(), f"random:{seed}", {}
    state_dict, report = read_state_dict(checkpoint)
    report.dropped = [k for k in state_dict if k.startswith(drop_prefixes)]
    kept = {k: v for k, v in state_dict.items() if not k.startswith(drop_prefixes)}
    model = make_model()
    check_keys(kept, {k: tuple(v.shape) for k, v in model.state_dict().items()}, str(checkpoint), name)
    model.load_state_dict(kept, strict=True)
    return model, file_sha256(checkpoint), asdict(report)


@dataclass(frozen=True)
class TimmSpec:
    """What a timm-based registry entry declares: its id, how to build the model (forward → pooled [B, D],
    ``num_classes=0``), its preprocessing, a one-line description of the embedding, and the checkpoint key
    prefixes it drops (classifier, truncated layers)."""

    encoder_id: str
    make_model: Callable[[], nn.Module]
    preprocessing: Preprocessing
    embedding: str
    drop_prefixes: tuple[str, ...] = ()


def timm_encoder(spec: TimmSpec, checkpoint: str | Path | None, device: torch.device, precision: str) -> Encoder:
    """Encoder of ``spec`` with weights from ``checkpoint`` (see ``load_weights``) on ``device``.

    Raises:
        CheckpointError: no checkpoint, or its keys/shapes do not fit; ParamsError: precision not allowed.
    """
    model, sha, report = load_weights(spec.encoder_id, spec.make_model, checkpoint, spec.drop_prefixes)
    return Encoder(
        id=spec.encoder_id,
        model=model,
        embed_dim=int(model.num_features),
        preprocessing=spec.preprocessing,
        weights_sha256=sha,
        device=device,
        precision=resolve_precision(precision, device),
        embedding=spec.embedding,
        load_report=report,
    )


@ENCODERS.register("uni_v1")
def uni_v1(checkpoint: str | Path | None, device: torch.device, precision: str) -> Encoder:
    """UNI (Chen et al., Nature Medicine 2024): ViT-L/16 at 224 px, LayerScale 1e-5, CLS token, 1024-d.

    Architecture and transform from the model card (timm ``vit_large_patch16_224``; Resize(224) with
    torchvision's default bilinear, ImageNet mean/std). Bring the gated ``pytorch_model.bin`` yourself.
    """

    def make() -> nn.Module:
        return timm.create_model(
            "vit_large_patch16_224",
            pretrained=False,
            img_size=224,
            patch_size=16,
            init_values=1e-5,
            num_classes=0,
            dynamic_img_size=True,
        )

    spec = Preprocessing(size=224, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return timm_encoder(TimmSpec("uni_v1", make, spec, "CLS token, 1024-d"), checkpoint, device, precision)


def make_resnet50_trunc() -> nn.Module:
    """timm ResNet-50 (torchvision layout and key names) cut after layer3, global average pool → [B, 1024]."""
    model = timm.create_model("resnet50", pretrained=False, num_classes=0)
    model.layer4 = nn.Identity()
    model.num_features = 1024
    return model


@ENCODERS.register("resnet50_trunc")
def resnet50_trunc(checkpoint: str | Path | None, device: torch.device, precision: str) -> Encoder:
    """CLAM's baseline (Lu et al., Nat. Biomed. Eng. 2021): ImageNet ResNet-50 truncated after layer3, 1024-d.

    Checkpoint: a local ImageNet ResNet-50 state dict (torchvision or timm key names); ``layer4.*`` and
    ``fc.*`` are dropped.
    """
    spec = Preprocessing(size=224, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return timm_encoder(
        TimmSpec("resnet50_trunc", make_resnet50_trunc, spec, "layer3 average-pooled, 1024-d",
                 drop_prefixes=("layer4.", "fc.")),
        checkpoint, device, precision,
    )


@ENCODERS.register("timm")
def timm_model(
    checkpoint: str | Path | None, device: torch.device, precision: str, model_name: str
) -> Encoder:
    """Any timm architecture as ``timm:<model_name>`` with a local checkpoint; pooled features, no classifier.

    Preprocessing follows the model's timm config (input size, interpolation, mean, std; shortest edge
    resized to the input size, then centre crop). The classifier keys of the checkpoint are dropped.
    """
    if not timm.is_model(model_name):
        raise ParamsError(
            f"timm has no model {model_name!r} (encoder 'timm:{model_name}'); see timm.list_models()"
        )

    def make() -> nn.Module:
        return timm.create_model(model_name, pretrained=False, num_classes=0)

    cfg = timm.get_pretrained_cfg(model_name)  # default tag's config: input size, interpolation, mean, std
    data = resolve_data_config(cfg.to_dict() if cfg else {})
    spec = Preprocessing(
        size=int(data["input_size"][-1]),
        interpolation=data["interpolation"],
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
    )
    classifier = (cfg.classifier if cfg and cfg.classifier else "head") + "."
    return timm_encoder(
        TimmSpec(f"timm-{model_name}", make, spec, f"timm {model_name} pooled features", drop_prefixes=(classifier,)),
        checkpoint, device, precision,
    )


TINY_SIZE = 64


@ENCODERS.register("tiny_test")
def tiny_test(checkpoint: str | Path | None, device: torch.device, precision: str) -> Encoder:
    """TEST ONLY: a 2-block ViT (patch 16, 64 px, 64-d) with seeded random weights (default ``random:0``).

    Meaningless features; exists so tests and benchmarks exercise the pipeline in milliseconds on CPU.
    """

    def make() -> nn.Module:
        return VisionTransformer(
            img_size=TINY_SIZE, patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2, num_classes=0
        )

    spec = Preprocessing(size=TINY_SIZE, interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return timm_encoder(TimmSpec("tiny_test", make, spec, "TEST ONLY random tiny ViT CLS token, 64-d"),
                        checkpoint or "random:0", device, precision)


#: nan_test: mean normalised intensity above which a patch is blank glass (raw RGB mean above ~230 of 255).
NAN_TEST_GLASS = 0.8


@ENCODERS.register("nan_test")
def nan_test(checkpoint: str | Path | None, device: torch.device, precision: str) -> Encoder:
    """TEST ONLY: ``tiny_test`` whose feature row is NaN for a blank-glass patch (mean normalised intensity
    above ``NAN_TEST_GLASS``), so tests see an encoder fail on some patches of some slides.
    """
    tiny = tiny_test(checkpoint, device, precision)

    def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        glass = x.float().mean(dim=(1, 2, 3)) > NAN_TEST_GLASS
        return torch.where(glass[:, None], torch.full_like(out, float("nan")), out)

    return replace(tiny, id="nan_test", features=features, embedding="TEST ONLY: tiny_test, NaN on blank glass")
