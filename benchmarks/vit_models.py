"""ViT-Tiny/16, defined here with plain `torch.nn`, for the vision-transformer benchmark rows.

timm, where the usual small ViT comes from, imports torchvision at import time, and
torchvision does not import on the benchmark machine (see cnn_models.py), so the network is
written out following Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for
Image Recognition at Scale" (2020), with the configuration of timm's
`vit_tiny_patch16_224`: 16x16 patches embedded by a strided convolution, width 192, depth 12,
3 heads, MLP ratio 4, a class token, a learned position embedding (one entry for the class
token too), pre-norm blocks, GELU, layer norm eps 1e-6, the class token's final state to the
linear head, no dropout. Attention is fused through F.scaled_dot_product_attention, as timm
does by default. Parameter names follow timm's, so its state dict loads unchanged, and the
count at 224x224 equals timm's, 5,717,416 (measured against timm 1.0.31's
`vit_tiny_patch16_224`, imported once with a stub for its module-level torchvision
imports). The initialization follows timm's default (truncated normal, std 0.02, for the
linear layers and the position embedding; class token std 1e-6); no weights are downloaded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)      # (batch, patches, dim)


class VisionTransformer(nn.Module):
    def __init__(self, img_size: int = 224, patch: int = 16, dim: int = 192, depth: int = 12,
                 heads: int = 3, mlp_ratio: float = 4.0, num_classes: int = 1000) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (img_size // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit_tiny(img_size: int = 224) -> nn.Module:
    """ViT-Tiny/16 (timm's vit_tiny_patch16_224) for square images of `img_size` pixels."""
    return VisionTransformer(img_size=img_size)
