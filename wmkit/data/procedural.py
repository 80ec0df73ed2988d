"""Procedural training images, seeded: dead leaves and fractal noise.

Baradad et al. ("Learning to See by Looking at Noise", NeurIPS 2021) train useful features on
such images: dead leaves (occluding discs with power-law radii: edges, flat regions and
occlusion at every scale, like natural images) and fractal noise (a 1/f^alpha spectrum, the
natural-image power law, with random colour). They add variety that a few dozen photographs
cannot, at no download cost. Same seed, same image, bit for bit.
"""
from __future__ import annotations

import math

import torch

KINDS = ("dead_leaves", "fractal_noise")


def dead_leaves(size: int, generator: torch.Generator, *, shapes: int = 400, min_radius: float = 0.015,
                max_radius: float = 0.35, alpha: float = 3.0) -> torch.Tensor:
    """(3, size, size) in [0, 1]: ``shapes`` discs painted front to back, radii drawn from a
    power law r^-alpha between ``min_radius`` and ``max_radius`` (fractions of the side)."""
    image = torch.zeros(3, size, size)
    covered = torch.zeros(size, size, dtype=torch.bool)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5,
                            torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")
    # inverse CDF of p(r) ~ r^-alpha on [min, max]
    a, b, k = min_radius ** (1 - alpha), max_radius ** (1 - alpha), 1 - alpha
    for _ in range(shapes):
        u = float(torch.rand(1, generator=generator))
        radius = (a + u * (b - a)) ** (1 / k) * size
        cy, cx = (torch.rand(2, generator=generator) * size).tolist()
        colour = torch.rand(3, generator=generator)
        disc = ((ys - cy) ** 2 + (xs - cx) ** 2 <= radius ** 2) & ~covered
        image[:, disc] = colour[:, None]
        covered |= disc
        if bool(covered.all()):
            break
    # whatever no disc reached takes one more random colour
    image[:, ~covered] = torch.rand(3, 1, generator=generator)
    return image


def fractal_noise(size: int, generator: torch.Generator, *, alpha_range: tuple[float, float] = (2.0, 3.5)) -> torch.Tensor:
    """(3, size, size) in [0, 1]: Gaussian noise shaped to a 1/f^alpha power spectrum
    (alpha drawn per image), a random colour mix of three such fields, stretched to [0, 1]."""
    alpha = alpha_range[0] + float(torch.rand(1, generator=generator)) * (alpha_range[1] - alpha_range[0])
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    radius = torch.sqrt(fy ** 2 + fx ** 2)
    radius[0, 0] = 1.0 / size
    amplitude = radius ** (-alpha / 2)  # power ~ f^-alpha (natural images: about 2)
    noise = torch.randn(3, size, size, generator=generator)
    fields = torch.fft.irfft2(torch.fft.rfft2(noise) * amplitude, s=(size, size))
    mix = torch.randn(3, 3, generator=generator)
    image = torch.einsum("ij,jhw->ihw", mix, fields)
    low = image.amin(dim=(1, 2), keepdim=True)
    high = image.amax(dim=(1, 2), keepdim=True)
    return (image - low) / (high - low).clamp_min(1e-8)


def procedural_image(size: int, seed: int, kind: str = "any") -> torch.Tensor:
    """One image of ``kind`` (dead_leaves, fractal_noise, or any: chosen by the seed), quantised to 8 bits."""
    generator = torch.Generator().manual_seed(int(seed))
    if kind == "any":
        kind = KINDS[int(torch.randint(len(KINDS), (1,), generator=generator))]
    if kind == "dead_leaves":
        image = dead_leaves(size, generator, shapes=max(200, int(400 * math.log2(max(size, 2)) / 8)))
    elif kind == "fractal_noise":
        image = fractal_noise(size, generator)
    else:
        from ..errors import ConfigError

        raise ConfigError(f"unknown procedural kind '{kind}' ({', '.join(KINDS)} or any)")
    return image.clamp(0, 1).mul(255).round().div(255)
