"""bench/gpu.py in its CPU smoke mode: every figure of the GPU check is produced and plausible."""

import json


def test_gpu_check_smoke_on_cpu(bench, capsys):
    gpu = bench("gpu")
    gpu.main(["--device", "cpu", "--encoder", "tiny_test", "--threads", "1,2", "--patches", "6"])
    lines = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["device"] == "cpu" and figures["encoder"] == "tiny_test"
    assert figures["pipeline_patches"] == 6
    assert figures["encoder_patches_per_second_bf16_b2"] > 0
    assert figures["pipeline_patches_per_second_bf16_b2"] > 0
    # the pipeline includes the encoder's work, so it cannot be much faster than the encoder on ready tensors
    assert figures["pipeline_over_encoder_bf16_b2"] < 1.5
    assert 0 < figures["busy_fraction_bf16_b2"] <= 1.0
    assert figures["reader_patches_per_second_1_threads"] > 0 and figures["reader_patches_per_second_2_threads"] > 0
    assert 0.99 <= figures["cosine_min_bf16_vs_fp32"] <= 1.0 + 1e-6
    assert figures["meets_goal_cosine"] is True
    assert figures["precisions_skipped"] == []
    assert any(line.startswith("precision") for line in lines)  # the table


def test_gpu_check_defaults_per_device(bench):
    gpu = bench("gpu")
    cpu = gpu.parse_args(["--device", "cpu", "--precisions", "bf16,fp16"])
    assert cpu.precisions == ["bf16", "fp16"] and cpu.batch_sizes == [2] and cpu.checkpoint == "synthetic:1"
    cuda = gpu.parse_args(["--device", "cuda"])
    assert cuda.batch_sizes == [64, 128, 256, 512] and cuda.precisions == ["bf16", "fp16"]
    assert cuda.threads == [4, 8, 16] and cuda.patches == 4096
