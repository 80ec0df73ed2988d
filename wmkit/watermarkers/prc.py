"""The PRC watermark (Gunn, Zhao and Song, 2024): the signs of the initial noise are a codeword of
a pseudorandom error-correcting code (Christ and Gunn, 2024), zero-bit.

The code (key generation as in the reference implementation, with the key's secret as the
only source of randomness): a random n x k generator matrix G, and r parity checks of t = 3
positions each, planted by overwriting row n - r + j of G with the sum of t - 1 earlier
rows, so every codeword satisfies check j; a one-time pad and a permutation of the n
positions. The default sizes are the reference's: secpar = log2 C(n, t), k = g = secpar,
r = n - k - secpar, noise rate 1 - 2^(-secpar / g^2) (n = 4096 on the tiny pipeline: k = 33,
r = 4030, noise 0.021).

Marking: each image draws its own payload s (k bits) and noise e (Bernoulli bits), from
SHAKE-256 of the key secret and a hash of the noise magnitudes (fresh noise, fresh
randomness; a seeded call stays reproducible); the signs of the pipeline's noise become
c = G s + e + pad (over GF(2)), their magnitudes stay, so the noise is still exactly standard
normal and, without the key, the signs are pseudorandom: one image or many, marked noise
cannot be told from unmarked noise (the code's security rests on the planted checks being
hidden; it is not a claim this project tests).

Detection: DDIM-invert, turn each value y into a soft sign, the posterior mean E[sign z | y]
= erf(rho y / sqrt(2 (1 - rho^2))) for inverted values of unit variance that correlate with
the noise as rho (``inversion_correlation``; about 0.6 on the tiny pipeline), undo the pad,
and score every check by the product Pi_j of its soft signs: S = sum_j log((1 + Pi_j) / 2).
Under H0, for any fixed image, the pad (a key secret) makes each check's sign a fair coin,
independent across checks (each check has a position of its own, so the r checks are
linearly independent), so S is a sum of independent two-valued terms and Hoeffding's
inequality bounds its tail: p <= exp(-d^2 / (2 sum_j ((l+_j - l-_j) / 2)^2)), d = S - E0[S].
That is the reference detector's threshold turned into a p-value: valid whatever rho is
(rho only weighs the evidence) and conservative. The power is what the inversion leaves:
a check of 3 values holds only if all three signs come back, so the evidence grows like
the cube of the soft signs' quality (docs/gaussian_shading.md compares it with Gaussian
Shading, which needs one value per bit).
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import erf

from ..errors import ConfigError
from ..keys import Key
from ..registry import register_watermarker
from .initial_noise import InitialNoiseWatermarker


def _shake_ints(seed: bytes, label: str, count: int) -> np.ndarray:
    """``count`` pseudorandom unsigned 64-bit integers from SHAKE-256 of (seed, label)."""
    data = hashlib.shake_256(b"wmkit/prc\x00" + seed + label.encode()).digest(8 * count)
    return np.frombuffer(data, dtype="<u8")


def _shake_bits(seed: bytes, label: str, count: int) -> np.ndarray:
    data = hashlib.shake_256(b"wmkit/prc\x00" + seed + label.encode()).digest((count + 7) // 8)
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:count]


@dataclass(frozen=True)
class PseudorandomCode:
    """One key's code for codewords of length n."""

    generator: np.ndarray  # (n, k) uint8
    checks: np.ndarray  # (r, t) positions of each parity check
    pad: np.ndarray  # (n,) uint8
    noise_rate: float

    @classmethod
    def from_key(cls, secret: bytes, n: int, t: int = 3) -> "PseudorandomCode":
        secpar = int(math.log2(math.comb(n, t)))
        k = secpar
        r = n - k - secpar
        if r < 1:
            raise ConfigError(f"a latent of {n} values is too small for a pseudorandom code")
        noise_rate = 1.0 - 2.0 ** (-secpar / k**2)
        seed = secret + n.to_bytes(8, "little")
        generator = _shake_bits(seed, "generator", n * k).reshape(n, k)
        # check j: t - 1 distinct earlier positions and position n - r + j, whose generator row
        # becomes their sum, so that every codeword satisfies it
        checks = np.empty((r, t), dtype=np.int64)
        for j in range(r):
            limit = n - r + j  # at least k + secpar earlier positions to choose from
            draws = _shake_ints(seed, f"check/{j}", 4 * t)
            chosen = list(dict.fromkeys(int(v % limit) for v in draws))[: t - 1]
            if len(chosen) < t - 1:  # 4t draws from 66 or more positions: never in practice
                raise ConfigError("pseudorandom code: could not draw a parity check; use another key")
            checks[j] = chosen + [limit]
            generator[limit] = generator[chosen].sum(axis=0) % 2
        pad = _shake_bits(seed, "pad", n)
        # a secret permutation of the positions (Fisher-Yates on SHAKE draws)
        order = np.arange(n)
        swaps = _shake_ints(seed, "permutation", n)
        for i in range(n - 1, 0, -1):
            j = int(swaps[i] % (i + 1))
            order[i], order[j] = order[j], order[i]
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n)
        # position p of the code goes to latent position inverse[p]
        return cls(generator=generator[order], checks=inverse[checks], pad=pad[order], noise_rate=noise_rate)

    def encode(self, randomness: bytes) -> np.ndarray:
        """A fresh noisy codeword (n,) uint8 from per-image randomness."""
        n, k = self.generator.shape
        payload = _shake_bits(randomness, "payload", k)
        error = (_shake_ints(randomness, "error", n) < np.uint64(int(self.noise_rate * 2**64))).astype(np.uint8)
        return ((self.generator.astype(np.int64) @ payload) % 2).astype(np.uint8) ^ self.pad ^ error


@register_watermarker("prc")
class PRC(InitialNoiseWatermarker):
    """PRC watermark: initial-noise signs form a pseudorandom codeword; parity-check detection after inversion."""

    reads_value_by_value = True
    CODE_CACHE = 8

    def __init__(self, *, inversion_correlation: float = 0.6, inversion_steps: int = 10,
                 pipeline: Any = "tiny", calibration: Any = "auto"):
        if not isinstance(inversion_correlation, (int, float)) or not 0.0 < inversion_correlation < 1.0:
            raise ConfigError(f"inversion_correlation must lie in (0, 1), got {inversion_correlation!r}")
        super().__init__(pipeline=pipeline, inversion_steps=inversion_steps, calibration=calibration)
        self.inversion_correlation = float(inversion_correlation)
        self._codes: OrderedDict[tuple[bytes, int], PseudorandomCode] = OrderedDict()

    def config(self) -> dict[str, Any]:
        return {"inversion_correlation": self.inversion_correlation, "inversion_steps": self.inversion_steps}

    def code(self, key: Key, size: int) -> PseudorandomCode:
        self.check_key(key)
        cache_key = (hashlib.sha256(key.secret).digest(), size)
        if cache_key not in self._codes:
            self._codes[cache_key] = PseudorandomCode.from_key(key.secret, size)
            while len(self._codes) > self.CODE_CACHE:
                self._codes.popitem(last=False)
        self._codes.move_to_end(cache_key)
        return self._codes[cache_key]

    def watermark_latents(self, latents: torch.Tensor, key: Key) -> torch.Tensor:
        """Every value keeps its magnitude and takes the sign of a fresh codeword (1 = negative)."""
        return self.with_signs(latents, lambda z: self.code(key, z.numel()).encode(key.secret + self.magnitude_digest(z)))

    def soft_signs(self, latents: torch.Tensor) -> np.ndarray:
        """(B, n) posterior means of the initial noise's signs given inverted latents."""
        y = latents.detach().reshape(len(latents), -1).double().cpu().numpy()
        y = y / np.maximum(y.std(axis=1, keepdims=True), 1e-12)
        rho = self.inversion_correlation
        return erf(rho * y / math.sqrt(2.0 * (1.0 - rho**2)))

    def analytic_log_p(self, latents: torch.Tensor, key: Key):
        """(log p, score = -log10 p, extra): the Hoeffding bound on the parity-check score."""
        code = self.code(key, latents[0].numel())
        posteriors = (1 - 2 * code.noise_rate) * (1.0 - 2.0 * code.pad)[None] * self.soft_signs(latents)
        posteriors = np.clip(posteriors, -1 + 1e-12, 1 - 1e-12)
        products = np.prod(posteriors[:, code.checks], axis=2)  # (B, r)
        log_plus, log_minus = np.log1p(products) - np.log(2), np.log1p(-products) - np.log(2)
        # summed image by image: numpy's sum over an axis of a (B, r) array rounds differently
        # for different B, and an image's p-value must not depend on its batch
        excess = np.array([lp.sum() - 0.5 * (lp + lm).sum() for lp, lm in zip(log_plus, log_minus)])
        spread = np.array([(((lp - lm) / 2) ** 2).sum() for lp, lm in zip(log_plus, log_minus)])
        log_p = np.where(excess > 0, -excess**2 / (2 * np.maximum(spread, 1e-300)), 0.0)
        satisfied = (products > 0).mean(axis=1)
        return log_p, -log_p / np.log(10), {"checks_satisfied": satisfied, "check_z": excess / np.sqrt(np.maximum(spread, 1e-300))}
