"""Turning and rescaling an image back onto a periodic mark's own grid, for the readers that
find a tile's period and angle first (``periodic``, and ``HiddenExtractor`` for Stable
Signature and ``hidden``)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur(y: torch.Tensor, sigma: float) -> torch.Tensor:
    """``y`` (..., H, W) through a separable Gaussian of ``sigma`` pixels (edges replicated)."""
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=y.dtype, device=y.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(y.reshape(-1, 1, *y.shape[-2:]), (radius,) * 4, mode="replicate")
    return F.conv2d(F.conv2d(x, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1)).view(y.shape)


def resample(y: torch.Tensor, scale: float, angle: float, min_size: int, offset: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """``y`` (..., H, W) scaled by ``scale`` and turned back by ``angle`` degrees about its
    centre (bilinear; low-passed first when shrinking), cropped to the largest upright
    rectangle that holds image content only, at least ``min_size`` pixels a side; the output
    grid moved by ``offset`` (down, across) of its own pixels."""
    height, width = y.shape[-2:]
    x = y.reshape(-1, 1, height, width)
    if scale < 1:
        x = gaussian_blur(x, 0.5 / scale)
    theta = math.radians(angle)
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    # the upright rectangle inside the turned image (for aspect ratios near 1; a long thin
    # image keeps less than it could, which costs tiles, not correctness)
    keep = 1.0 / (c + s * max(height, width) / min(height, width)) if angle else 1.0
    out_h, out_w = max(min_size, int(height * scale * keep)), max(min_size, int(width * scale * keep))
    # output pixel (u, v) around the centre -> input pixel: rotate by angle, divide by scale
    ys = (torch.arange(out_h, dtype=y.dtype, device=y.device) - (out_h - 1) / 2 + offset[0]) / scale
    xs = (torch.arange(out_w, dtype=y.dtype, device=y.device) - (out_w - 1) / 2 + offset[1]) / scale
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    src_y = gy * math.cos(theta) + gx * math.sin(theta) + (height - 1) / 2
    src_x = -gy * math.sin(theta) + gx * math.cos(theta) + (width - 1) / 2
    grid = torch.stack([src_x / (width - 1) * 2 - 1, src_y / (height - 1) * 2 - 1], -1)[None].expand(x.shape[0], -1, -1, -1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(*y.shape[:-2], out_h, out_w)

