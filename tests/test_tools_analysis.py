"""tools/analyze_model.py and tools/benchmark_inference.py on tiny inputs."""
import os
import sys

import torch
from torch import nn

from duda_d2.utils.analysis import count_flops
from helpers import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import analyze_model  # noqa: E402
import benchmark_inference  # noqa: E402

B0 = os.path.join(REPO, "configs/networks/mit_b0_segformer.yaml")


class _Attention(nn.Module):
    def forward(self, x):
        return nn.functional.scaled_dot_product_attention(x, x, x)


def test_attention_flops_are_counted():
    # (batch*heads = 2) x N=5 queries x M=5 keys x (D=3 for QKᵀ + Dv=3 for AV)
    flops = count_flops(_Attention(), torch.randn(1, 2, 5, 3)) * 1e9
    assert round(flops) == 2 * 5 * 5 * (3 + 3)


def test_linear_flops_match_hand_count():
    assert round(count_flops(nn.Linear(4, 6), torch.randn(3, 4)) * 1e9) == 3 * 4 * 6


def test_analyze_model_prints_params_and_flops(capsys):
    assert analyze_model.main(["--config-file", B0, "--height", "64", "--width", "64"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "networks/mit_b0_segformer " in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "network" and cells[2] == "3.32" and float(cells[5]) > 0


def test_benchmark_inference_measures_and_prints(capsys):
    result = benchmark_inference.measure(B0, [], 32, 64, batch=2, runs=2, warmup=1, device="cpu")
    assert len(result["seconds"]) == 2 and result["images_per_s"] > 0
    assert result["peak_mib"] > 0
    assert benchmark_inference.main(["--config-file", B0, "--height", "32", "--width", "32",
                                     "--runs", "1", "--warmup", "0", "--device", "cpu"]) == 0
    assert "images/s" in capsys.readouterr().out


def test_benchmark_loader_reports_images_per_second(synthetic_root, capsys):
    import benchmark_loader

    config_file = os.path.join(REPO, "configs/synthetic/self_training.yaml")
    assert benchmark_loader.main(["--config-file", config_file, "--workers", "0",
                                  "--iterations", "2", "--warmup", "1",
                                  "INPUT.CROP.SIZE", "(32, 32)"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("|") and "0 |" in line)
    assert float(row.strip("|").split("|")[1]) > 0
