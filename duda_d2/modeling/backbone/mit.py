"""Mix Transformer (MiT) encoders B0-B5 of SegFormer as a Detectron2 backbone.

The encoder is the SegFormer one: overlapping patch embeddings (strided convs), efficient
self-attention whose keys/values are spatially reduced by ``sr_ratio``, Mix-FFN (an MLP with a
3x3 depth-wise conv that replaces positional encodings) and stochastic depth. Module names follow
the released SegFormer checkpoints (``patch_embed1``, ``block1``, ``norm1``, ...) so that
``tools/convert_pretrained.py`` only has to rename the HuggingFace layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Sequence

import torch
from torch import nn
from timm.layers import DropPath, trunc_normal_

from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec

from ..activation_checkpoint import checkpointed

__all__ = ["MixVisionTransformer", "MIT_SPECS", "build_mit_backbone"]


@dataclass(frozen=True)
class MiTSpec:
    """Widths, depths and attention layout of one MiT variant (SegFormer, Table 6)."""

    embed_dims: Sequence[int]
    depths: Sequence[int]
    num_heads: Sequence[int] = (1, 2, 5, 8)
    mlp_ratios: Sequence[int] = (4, 4, 4, 4)
    sr_ratios: Sequence[int] = (8, 4, 2, 1)


_SMALL = (32, 64, 160, 256)
_WIDE = (64, 128, 320, 512)
MIT_SPECS: Dict[str, MiTSpec] = {
    "b0": MiTSpec(_SMALL, (2, 2, 2, 2)),
    "b1": MiTSpec(_WIDE, (2, 2, 2, 2)),
    "b2": MiTSpec(_WIDE, (3, 4, 6, 3)),
    "b3": MiTSpec(_WIDE, (3, 4, 18, 3)),
    "b4": MiTSpec(_WIDE, (3, 8, 27, 3)),
    "b5": MiTSpec(_WIDE, (3, 6, 40, 3)),
}


class OverlapPatchEmbed(nn.Module):
    """Strided conv whose kernel overlaps neighbouring patches, then LayerNorm on the tokens."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor):
        x = self.proj(x)
        h, w = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values come from a ``sr_ratio``-times smaller map."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, attn_drop: float, proj_drop: float):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} not divisible by num_heads {num_heads}"
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(b, n, heads, c // heads).transpose(1, 2)
        if self.sr_ratio > 1:
            x = x.transpose(1, 2).reshape(b, c, h, w)
            x = self.norm(self.sr(x).flatten(2).transpose(1, 2))
        k, v = self.kv(x).reshape(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        drop = self.attn_drop if self.training else 0.0
        out = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class MixFFN(nn.Module):
    """fc -> 3x3 depth-wise conv -> GELU -> fc: the conv leaks position information."""

    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(x)
        b, n, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return self.drop(self.fc2(self.drop(self.act(x))))


class MiTBlock(nn.Module):
    """Pre-norm transformer block with stochastic depth on both residual branches."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int,
                 drop: float, attn_drop: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, dim * mlp_ratio, drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixVisionTransformer(Backbone):
    """Four-stage MiT encoder returning ``res2..res5`` at strides 4, 8, 16, 32."""

    def __init__(self, spec: MiTSpec, in_chans: int = 3, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
                 activation_checkpointing: bool = False):
        """``activation_checkpointing``: recompute each block in the backward pass (non-
        reentrant ``torch.utils.checkpoint``; the RNG state is replayed, so dropout and
        drop-path draw the same masks and the gradients are the same)."""
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        names = ["res2", "res3", "res4", "res5"]
        unknown = set(out_features) - set(names)
        if unknown:
            raise ValueError(f"MiT out_features {sorted(unknown)} unknown; choose from {names}")
        self._out_features = [n for n in names if n in out_features]
        # Stochastic depth grows linearly with the block index over the whole network.
        total = sum(spec.depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        first = 0
        in_dim = in_chans
        for i, (dim, depth) in enumerate(zip(spec.embed_dims, spec.depths), start=1):
            patch, stride = (7, 4) if i == 1 else (3, 2)
            setattr(self, f"patch_embed{i}", OverlapPatchEmbed(in_dim, dim, patch, stride))
            setattr(self, f"block{i}", nn.ModuleList(
                MiTBlock(dim, spec.num_heads[i - 1], spec.mlp_ratios[i - 1],
                         spec.sr_ratios[i - 1], drop_rate, attn_drop_rate, rates[first + j])
                for j in range(depth)))
            setattr(self, f"norm{i}", nn.LayerNorm(dim, eps=1e-6))
            first += depth
            in_dim = dim
        self._out_feature_strides = dict(zip(names, (4, 8, 16, 32)))
        self._out_feature_channels = dict(zip(names, spec.embed_dims))
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs = {}
        for i, name in enumerate(("res2", "res3", "res4", "res5"), start=1):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                if self.activation_checkpointing and torch.is_grad_enabled():
                    x = checkpointed(block, x, h, w)
                else:
                    x = block(x, h, w)
            x = getattr(self, f"norm{i}")(x)
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
            if name in self._out_features:
                outputs[name] = x
            if name == self._out_features[-1]:
                break
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_feature_channels[n],
                             stride=self._out_feature_strides[n]) for n in self._out_features}

    @property
    def size_divisibility(self) -> int:
        return 32


def _init_weights(m: nn.Module) -> None:
    """SegFormer's initialisation: truncated normal linears, He-normal convs, unit norms."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


@BACKBONE_REGISTRY.register()
def build_mit_backbone(cfg, input_shape: ShapeSpec) -> MixVisionTransformer:
    """Build the MiT variant named by ``MODEL.MIT.VARIANT`` (b0 ... b5)."""
    variant = cfg.MODEL.MIT.VARIANT.lower()
    if variant not in MIT_SPECS:
        raise ValueError(f"MODEL.MIT.VARIANT={cfg.MODEL.MIT.VARIANT!r} unknown; "
                         f"choose one of {sorted(MIT_SPECS)}")
    return MixVisionTransformer(
        MIT_SPECS[variant],
        in_chans=input_shape.channels,
        drop_rate=cfg.MODEL.MIT.DROP_RATE,
        attn_drop_rate=cfg.MODEL.MIT.ATTN_DROP_RATE,
        drop_path_rate=cfg.MODEL.MIT.DROP_PATH_RATE,
        out_features=cfg.MODEL.MIT.OUT_FEATURES,
        activation_checkpointing=cfg.MODEL.MIT.ACTIVATION_CHECKPOINTING,
    )
