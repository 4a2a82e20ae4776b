"""The ``tile:`` and ``extract:`` sections of params.yaml, declared once as pydantic models.

``slidemil tile`` and ``slidemil extract`` read them with ``slidemil.core.params.read_section``; the CLI
validates them before any stage runs. Light on purpose (pydantic only): the stage modules import it for
``--help``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from slidemil.core.hashing import json_sha256
from slidemil.core.params import Section

#: Keys of the tile section that do not change a slide's tiles (left out of the resume digest).
NOT_IN_DIGEST = ("output", "fail_if", "memory_budget_mb", "qc_size", "workers")

Byte = Annotated[int, Field(ge=0, le=255)]
#: a batch stage's exit rule: a fraction in [0, 1) of failed slides above which it fails, or a word
FailIf = Annotated[float, Field(ge=0, lt=1)] | Literal["all_failed", "any_failed", "never"]
FAIL_IF_HELP = ("exit status 1 when more than this fraction of slides failed (skipped ones not counted), "
                "or all_failed | any_failed | never; the per-status counts are printed")


def _invalid(must_be: str) -> PydanticCustomError:
    """A validation error whose message reads "params key 'x.y' must be <must_be>, got …"."""
    return PydanticCustomError("invalid", "Value should be " + must_be.replace("{", "{{").replace("}", "}}"))


class TissueSection(Section):
    """``tile.tissue``: tissue segmentation of the overview (:func:`slidemil.extract.tissue.tissue_mask`).

    The fields document themselves; ``od`` is the stain-agnostic optical-density rule (the brightfield
    default), ``saturation`` the H&E rule, ``brightness`` the fluorescence rule.
    """

    mask_mpp: float = Field(8.0, gt=0, description="working resolution of the tissue mask (µm/px)")
    min_mask_side: int = Field(512, ge=16, description="the mask's longer side is at least this many px")
    method: Literal["auto", "od", "saturation", "brightness"] = Field(
        "auto", description="auto (brightness for dark-background slides, else od) | od | saturation | brightness")
    otsu: StrictBool = Field(True, description="Otsu threshold within [min_threshold, max_threshold]; "
                                               "false: min_threshold is a fixed threshold")
    min_threshold: Byte = Field(10, description="lower bound (0–255) of the saturation/brightness threshold")
    max_threshold: Byte = Field(40, description="upper bound (0–255) of the saturation/brightness threshold")
    min_od: float = Field(0.05, ge=0, description="lower bound of the Otsu threshold of the summed optical density "
                                                  "(od method; 0.05 ≈ 4 % darker than the glass per channel)")
    max_od: float = Field(0.1, ge=0, description="upper bound of the Otsu threshold of the summed optical density")
    min_chroma: Byte = Field(8, description="a near-grey pixel (max − min channel below this, 0–255) is tissue "
                                            "only above grey_min_od: coverslip edges shade glass grey")
    grey_min_od: float = Field(0.5, ge=0, description="summed OD above which a near-grey pixel is tissue")
    glass_tolerance: Byte = Field(4, description="± levels (0–255) per channel around the glass colour that "
                                                 "count as glass")
    glass_min_fraction: float = Field(0.1, ge=0, le=1, description="share of overview pixels that must be glass "
                                      "for the background to be estimated from the slide")
    default_background: Byte = Field(240, description="glass level (0–255, all channels) assumed when no glass "
                                                      "is visible (an all-tissue ROI)")
    dark_background: Byte = Field(60, description="median brightness (0–255) below which auto treats a slide "
                                                  "as fluorescence")
    median_blur_um: float = Field(40.0, ge=0, description="median-filter width before thresholding (µm)")
    close_um: float = Field(32.0, ge=0, description="morphological closing diameter (µm)")
    min_area_mm2: float = Field(0.01, ge=0, description="tissue objects smaller than this are dropped (mm²)")
    max_hole_mm2: float = Field(0.05, ge=0, description="holes smaller than this are filled (mm²)")
    pen_filter: StrictBool = Field(True, description="remove green, blue and black ink (brightfield only)")
    pen_min_saturation: Byte = Field(90, description="saturation (0–255); half of it makes a green hue ink")
    ink_min_saturation: Byte = Field(110, description="saturation (0–255) above which a blue hue can be ink")
    black_max_value: Byte = Field(50, description="brightness (0–255) below which a pixel can be black ink")
    pen_min_area_mm2: float = Field(0.05, ge=0, description="blue/black objects smaller than this are stain, "
                                                            "not ink (mm²)")

    @field_validator("max_threshold")
    @classmethod
    def _band(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_threshold")
        if low is not None and value < low:
            raise _invalid(f"at least min_threshold ({low})")
        return value



class TileSection(Section):
    """``tile:``: the patch grid (µm/px, px at the target resolution) and where the tiles go."""

    output: str = Field("data/tiles", description="tiles folder (coords.zarr, manifest.csv, qc/)")
    target_mpp: float = Field(0.5, gt=0, description="µm/px of the patches (0.5 ≈ 20x)")
    patch_size: int = Field(512, ge=8, description="patch side in px at target_mpp")
    overlap: int = Field(0, ge=0, description="px at target_mpp shared by neighbouring patches (< patch_size)")
    min_tissue_fraction: float = Field(0.25, ge=0, le=1, description="least tissue fraction of a kept patch")
    max_upsample: float = Field(0.1, ge=0, description="a target at most this fraction finer than the scan")
    level_tolerance: float = Field(0.05, ge=0, lt=1, description="a level up to this fraction coarser than the "
                                                                 "target counts as the target")
    mpp_range: tuple[float, float] = Field((0.05, 50.0), description="plausible level-0 µm/px [low, high] "
                                                                     "from metadata")
    memory_budget_mb: float = Field(1024, gt=0, description="largest single read (MB)")
    qc_size: int = Field(1024, ge=64, description="longer side of the QC image (px)")
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="processes tiling slides in parallel (auto: one per CPU core, at most 8; each "
        "holds one slide's overview, up to memory_budget_mb)")
    fail_if: FailIf = Field(0.5, description=FAIL_IF_HELP)
    tissue: TissueSection = Field(default_factory=TissueSection, description="tissue segmentation")

    @field_validator("overlap")
    @classmethod
    def _overlap(cls, value: int, info: ValidationInfo) -> int:
        size = info.data.get("patch_size")
        if size is not None and value >= size:
            raise _invalid(f"smaller than patch_size ({size})")
        return value

    @field_validator("mpp_range")
    @classmethod
    def _mpp_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] < value[1]:
            raise _invalid("[low, high] µm/px with 0 < low < high")
        return value

    def digest(self, mpp_override: float | None) -> str:
        """sha256 (first 16 hex digits) of what decides a slide's tiles: this section minus
        ``NOT_IN_DIGEST``, plus the slide's mpp override (the resume key stored as ``params_digest``)."""
        values = self.model_dump(exclude=set(NOT_IN_DIGEST))
        values["mpp_range"] = list(self.mpp_range)
        return json_sha256({**values, "mpp_override": mpp_override})[:16]


class StainNormSection(Section):
    """``extract.stain_norm``: optional stain normalisation before the encoder (:mod:`slidemil.extract.stain`)."""

    method: Literal["none", "macenko", "reinhard"] = Field(
        "none", description="stain normalisation before the encoder: none | macenko | reinhard")
    reference: str = Field(
        "", description="reference patch image (PNG/JPEG) or slide whose stain the patches are mapped to")


class ExtractSection(Section):
    """``extract:``: the encoder, where it runs, and the feature store it writes."""

    encoder: str = Field("conch_v1", min_length=1, description="registered encoder name "
                                                               "(slidemil extract --list-encoders) or timm:<model>")
    checkpoint: str = Field("", description='weights file; "" → env CONCH_CHECKPOINT for conch_v1, else '
                                            "synthetic weights (WARNING)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:<i>")
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="patches per batch (auto: 256 on CUDA, 16 on CPU)")
    num_workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="patch-reader threads (auto: cores - 1 on CUDA, 2 on CPU)")
    scheduler: str = Field("none", description="none | local | a dask scheduler address like tcp://host:8786")
    n_workers: int = Field(2, ge=1, description="dask workers of scheduler=local on CPU (on CUDA: one per GPU)")
    dtype: Literal["float32", "float16"] = Field("float32", description="dtype of the stored features")
    tiles: str = Field("data/tiles", description="tiles store (output of `slidemil tile`)")
    output: str = Field("data/features", description="folder of <encoder_id>.zarr and manifest.csv")
    fail_if: FailIf = Field(0.5, description=FAIL_IF_HELP)
    stain_norm: StainNormSection = Field(default_factory=StainNormSection,
                                         description="stain normalisation (off by default)")

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in ("none", "local") and "://" not in value:
            raise _invalid("none, local or a scheduler address like tcp://host:8786")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise _invalid("auto, cpu, cuda or cuda:<index>")
        return value
