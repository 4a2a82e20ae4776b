"""bench/gpu.py in its CPU smoke mode: every figure of the GPU check is produced and plausible."""

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(name: str):
    """Import ``bench/<name>.py`` as a module (the bench folder is not a package; its helpers sit beside it)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_smoke_on_cpu(capsys):
    gpu = load_bench("gpu")
    gpu.main(["--device", "cpu", "--encoder", "tiny_test", "--threads", "1,2", "--patches", "6"])
    lines = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["device"] == "cpu" and figures["encoder"] == "tiny_test"
    assert figures["pipeline_patches"] == 6
    assert figures["encoder_patches_per_second_bf16_b2"] > 0
    assert figures["pipeline_patches_per_second_bf16_b2"] > 0
    # the pipeline includes the encoder's work, so it cannot be faster than the encoder on ready tensors
    assert figures["pipeline_over_encoder_bf16_b2"] < 1.05
    assert 0 < figures["busy_fraction_bf16_b2"] <= 1.0
    assert figures["reader_patches_per_second_1_threads"] > 0 and figures["reader_patches_per_second_2_threads"] > 0
    assert 0.99 <= figures["cosine_min_bf16_vs_fp32"] <= 1.0 + 1e-6
    assert figures["meets_goal_cosine"] is True
    assert figures["precisions_skipped"] == []
    assert any(line.startswith("precision") for line in lines)  # the table


def test_gpu_check_skips_fp16_on_cpu():
    gpu = load_bench("gpu")
    args = gpu.parse_args(["--device", "cpu", "--precisions", "bf16,fp16"])
    assert args.precisions == ["bf16", "fp16"] and args.batch_sizes == [2] and args.checkpoint == "synthetic:1"
    cuda = gpu.parse_args(["--device", "cuda"])
    assert cuda.batch_sizes == [64, 128, 256, 512] and cuda.precisions == ["bf16", "fp16"]
    assert cuda.threads == [4, 8, 16] and cuda.patches == 4096
