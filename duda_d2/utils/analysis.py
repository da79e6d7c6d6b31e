"""Parameters and FLOPs of each segmentation network of a model (fvcore's counter).

fvcore counts one fused multiply-add as one flop and has no handle for
``scaled_dot_product_attention``, which the MiT attention uses; ``_sdpa_flop_jit`` adds it
(two batched matmuls: Q·Kᵀ and A·V), so transformer FLOPs are not under-reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

from ..modeling.network import named_networks

__all__ = ["NetworkStats", "network_stats", "count_flops"]


@dataclass
class NetworkStats:
    name: str
    backbone_params: int
    head_params: int
    gflops: float

    @property
    def params(self) -> int:
        return self.backbone_params + self.head_params


def _sdpa_flop_jit(inputs, outputs) -> int:
    """Multiply-adds of softmax(Q Kᵀ) V for Q (..., N, D), K (..., M, D), V (..., M, Dv)."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for s in q[:-2]:
        batch *= s
    n, d, m, dv = q[-2], q[-1], k[-2], v[-1]
    return batch * n * m * (d + dv)


def count_flops(network: nn.Module, images: torch.Tensor) -> float:
    """GFLOPs (multiply-adds) of one forward of ``network`` on ``images``."""
    analysis = FlopCountAnalysis(network, images)
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop_jit)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.total() / 1e9


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def network_stats(model: nn.Module, size: Sequence[int], batch: int = 1) -> List[NetworkStats]:
    """Parameters and FLOPs at an input of (height, width) of every network in ``model``."""
    stats = []
    for name, network in named_networks(model):
        was_training = network.training
        network.eval()
        device = next(network.parameters()).device
        images = torch.zeros(batch, 3, *size, device=device)
        gflops = count_flops(network, images)
        network.train(was_training)
        stats.append(NetworkStats(name, _count(network.backbone), _count(network.head), gflops))
    return stats
