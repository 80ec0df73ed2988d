"""Gaussian Shading (Yang et al., CVPR 2024): the key chooses the sign of every initial-noise value.

Marking: the key's message (``num_bits``, repeated over the C x h x w latent), XOR-ed
with a pseudorandom stream, gives one bit per latent value; the pipeline's own noise
z (drawn exactly as it would be) becomes |z| with that sign. This is the paper's
one-bit quantile slicing (l = 1): z ~ N(0, 1) and a fair sign independent of |z| give
exactly N(0, 1) again, so the output distribution does not change. Detection:
DDIM-invert, read the signs, count agreements with the expected bits.

Randomness is never reused across images by design, only by chance: the stream is
SHAKE-256 of (key secret, latent size, *nonce*), and each image draws its own nonce
among 2^``nonce_bits`` (taken from a hash of the noise magnitudes, so a seeded call
stays reproducible). The reference code fixes one stream per key, so every image of a
key shares one sign pattern, which averaging a few of them exposes (Thietke et al.,
2025). Here two images share a stream only when their nonces collide: about n^2 / 2^(b+1)
pairs among n images of one key (n = 100, b = 12: about 1.2 pairs). Raising
``nonce_bits`` makes that rarer at the cost of detection time (linear in 2^b) and of
b x log10(2) decades of p-value (the search is counted, below).

The p-value comes from the randomness of the key, as Tree-Ring's does: for any fixed
image, its signs agree with a key's stream, nonce by nonce, as Binomial(n, 1/2) over
keys (each stream bit is a fair coin independent of the image), whatever the
inversion error or the image statistics. The detector searches every nonce and keeps
the most agreements, so p = min(1, 2^b P(Binomial(n, 1/2) >= best)) by Bonferroni. The
same holds for an image marked with another key (its streams are independent of
this key's), the multi-user null. The message comes back by majority vote over its
repetitions under the winning nonce (``bits``, ``bit_accuracy``); the p-value counts
every latent value (the vote would throw away evidence).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Optional

import numpy as np
import torch

from .. import stats
from ..errors import ConfigError
from ..keys import Key
from ..registry import register_watermarker
from ..types import DetectionResult
from .initial_noise import (SEARCH_FINE_ANGLES, SEARCH_SCAN_STEPS, InitialNoiseWatermarker, _inside,
                            _search_candidates, _undo, scan_angles)

MAX_NONCE_BITS = 20  # 2^20 streams of a 64 x 64 x 4 latent are 2 GiB: the search must stay in memory


def _stream(secret: bytes, size: int, nonce: int) -> bytes:
    """``size`` pseudorandom bits (packed, ``size`` / 8 bytes) for one key and nonce."""
    return hashlib.shake_256(b"wmkit/gaussian_shading\x00" + secret + size.to_bytes(8, "little")
                             + nonce.to_bytes(8, "little")).digest(size // 8)


@register_watermarker("gaussian_shading")
class GaussianShading(InitialNoiseWatermarker):
    """Gaussian Shading: key-chosen signs of the initial noise, exact binomial detection after inversion."""

    reads_value_by_value = True
    STREAM_CACHE = 4  # keys whose streams are kept (each 2^b x n / 8 bytes: 2 MiB for b = 12, n = 4096)
    STAGE_TWO_Z = 4.5  # correlation z of the best latent-level candidate that earns an image-level read
    STAGE_TWO_SKIP_P = 1e-10  # an untransformed reading this strong needs no search
    # Tree-Ring scans 4 degrees either side of the coarse angle; here the correlation refines
    # it on the latent first (measured on 10 generations rotated by 14 degrees: the same
    # detection, 1.39 s instead of 1.54 s per image; for Tree-Ring the same shortcut lost power)
    SCAN_WINDOW = 1.0
    LOCATE_BLOCK = 4096  # nonces correlated at once by _locate (4096 x n floats: 64 MiB for n = 4096)

    def __init__(self, *, num_bits: int = 256, nonce_bits: int = 12, inversion_steps: int = 10, search: bool = True,
                 pipeline: Any = "tiny", calibration: Any = "auto"):
        if not isinstance(num_bits, int) or isinstance(num_bits, bool) or num_bits < 1:
            raise ConfigError(f"num_bits must be a positive integer, got {num_bits!r}")
        if not isinstance(nonce_bits, int) or isinstance(nonce_bits, bool) or not 0 <= nonce_bits <= MAX_NONCE_BITS:
            raise ConfigError(f"nonce_bits must be an integer from 0 to {MAX_NONCE_BITS}, got {nonce_bits!r}")
        super().__init__(pipeline=pipeline, inversion_steps=inversion_steps, calibration=calibration)
        self.num_bits = num_bits
        self.nonce_bits = nonce_bits
        self.search = bool(search)
        self._streams: OrderedDict[tuple[bytes, int], np.ndarray] = OrderedDict()

    def config(self) -> dict[str, Any]:
        return {"num_bits": self.num_bits, "nonce_bits": self.nonce_bits, "inversion_steps": self.inversion_steps,
                "search": self.search}

    # -- the key's bits --------------------------------------------------------------------
    def message(self, key: Key) -> np.ndarray:
        self.check_key(key)
        return key.bits(self.num_bits)

    def _repeated_message(self, key: Key, size: int) -> np.ndarray:
        """The message repeated over ``size`` latent values (value i carries bit i mod num_bits), packed."""
        if size < self.num_bits:
            raise ConfigError(f"a latent of {size} values cannot carry {self.num_bits} bits")
        return np.packbits(self.message(key)[np.arange(size) % self.num_bits])

    def patterns(self, key: Key, size: int) -> np.ndarray:
        """(2^nonce_bits, size / 8) uint8: the packed sign bits (1 = negative) each nonce writes."""
        if size % 8:
            raise ConfigError(f"Gaussian Shading needs a latent whose size is a multiple of 8, got {size}")
        cache_key = (hashlib.sha256(key.secret + bytes(self.message(key))).digest(), size)
        if cache_key in self._streams:
            self._streams.move_to_end(cache_key)
            return self._streams[cache_key]
        streams = np.frombuffer(b"".join(_stream(key.secret, size, j) for j in range(2 ** self.nonce_bits)),
                                dtype=np.uint8).reshape(-1, size // 8)
        patterns = streams ^ self._repeated_message(key, size)[None]
        self._streams[cache_key] = patterns
        while len(self._streams) > self.STREAM_CACHE:
            self._streams.popitem(last=False)
        return patterns

    def nonce_of(self, latents: torch.Tensor) -> int:
        """A nonce from the noise magnitudes of one latent (C, h, w): fresh for fresh noise,
        the same for the same seed. The magnitudes are what marking keeps, so the nonce is
        a function of the kept half of the noise only."""
        return int.from_bytes(self.magnitude_digest(latents)[:8], "little") % (2 ** self.nonce_bits)

    # -- marking -----------------------------------------------------------------------------
    def watermark_latents(self, latents: torch.Tensor, key: Key) -> torch.Tensor:
        """Every value of the initial latents (B, C, h, w) keeps its magnitude and takes the
        sign its key bit chooses, under a nonce of its own per image."""
        return self.with_signs(latents, lambda z: np.unpackbits(self.patterns(key, z.numel())[self.nonce_of(z)]))

    # -- detection -----------------------------------------------------------------------------
    # The p-value's family: every nonce, at the identity (half the level) and at every
    # candidate of the geometric search (half the level, Bonferroni over the candidates).
    def _reading(self, latents: torch.Tensor, mask: Optional[torch.Tensor] = None) -> tuple[np.ndarray, np.ndarray, int]:
        """The key-independent part of the test: packed sign bits (B, n / 8) of inverted
        latents, the packed mask of the values read (n / 8,) and how many there are."""
        negative = (latents.detach().reshape(len(latents), -1) < 0).cpu().numpy()
        if mask is None:
            keep = np.ones(negative.shape[1], dtype=bool)
        else:
            keep = mask.expand(latents.shape[1:]).reshape(-1).cpu().numpy().astype(bool)
        return np.packbits(negative, axis=1), np.packbits(keep), int(keep.sum())

    @staticmethod
    def _agreements(reading: tuple[np.ndarray, np.ndarray, int], patterns: np.ndarray) -> np.ndarray:
        """(B, nonces): how many of the values read agree with each nonce's bits, per image."""
        signs, keep, count = reading
        wide = patterns.shape[1] % 8 == 0  # 64-bit words count 8 times faster than bytes
        patterns_w = patterns.view(np.uint64) if wide else patterns
        keep_w = keep.view(np.uint64) if wide else keep
        out = np.empty((len(signs), len(patterns)), dtype=np.int64)
        for i, row in enumerate(signs):
            row_w = row.view(np.uint64) if wide else row
            out[i] = count - np.bitwise_count((patterns_w ^ row_w[None]) & keep_w[None]).sum(axis=1, dtype=np.int64)
        return out

    def _best_nonce(self, reading: tuple[np.ndarray, np.ndarray, int], patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(agreements of the best nonce, that nonce) per image of a reading."""
        agreements = self._agreements(reading, patterns)
        nonce = agreements.argmax(axis=1)
        return agreements[np.arange(len(agreements)), nonce], nonce

    def _log_p(self, best: np.ndarray, count: int) -> np.ndarray:
        """log P(Binomial(count, 1/2) >= best) for one reading (no correction)."""
        return np.asarray(stats.log_binomial_sf(best, count, 0.5), dtype=np.float64)

    def _prepare(self, latents: torch.Tensor, search: Optional[bool] = None) -> dict:
        """Every key-independent reading: the identity and, with the search, each candidate
        undo (its packed signs, and its values for ``_locate``)."""
        height, width = latents.shape[-2:]
        prepared = {"identity": self._reading(latents), "search": self.search if search is None else search}
        if prepared["search"]:
            prepared["candidates"], prepared["undone"] = [], []
            for angle, zoom in _search_candidates():
                mask = _inside(height, width, angle, zoom)
                undone = _undo(latents, angle, zoom) * mask
                prepared["candidates"].append(self._reading(undone, mask))
                prepared["undone"].append(undone.reshape(len(latents), -1))
        return prepared

    def _locate(self, undone: list[torch.Tensor], candidates: list[tuple[float, float]],
                patterns: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """Per image, the candidate whose undone latent (``undone``: one (B, n) tensor per
        candidate) *correlates* best with some nonce's signs, and that correlation's z
        (sum s_i x_i / |x|, about N(0, 1) for a wrong key or nonce). Values rank the candidates
        better than sign counts do (measured on 10 generations rotated by 15 degrees: the right
        angle came first for 10 by correlation, for 6 by agreement count): an undo
        interpolates, and a value near zero says little. This only chooses what ``detect``
        re-reads from the image; it is not a p-value."""
        values = torch.stack(undone, dim=1).float()  # (B, candidates, n)
        norms = values.norm(dim=-1).clamp_min(1e-12)
        best = torch.full(values.shape[:2], -float("inf"))
        for start in range(0, len(patterns), self.LOCATE_BLOCK):  # the nonces, a block at a time
            signs = torch.from_numpy(1.0 - 2.0 * np.unpackbits(patterns[start:start + self.LOCATE_BLOCK], axis=1)
                                     .astype(np.float32))
            best = torch.maximum(best, (values @ signs.T).amax(dim=-1) / norms)
        z, index = best.max(dim=1)
        return z.numpy(), [candidates[int(j)] for j in index]

    def analytic_log_p(self, latents: torch.Tensor, key: Key, stage_two: Optional[dict[int, list[tuple]]] = None):
        """(log p, score = -log10 p, extra) of inverted latents against the key (module docstring)."""
        return self._scored(latents, key, stage_two)[:3]

    def _scored(self, latents: torch.Tensor, key: Key, stage_two: Optional[dict[int, list[tuple]]] = None,
                prepared: Optional[dict] = None):
        """analytic_log_p's triple and the winning reading per image (for the message)."""
        size = latents[0].numel()
        patterns = self.patterns(key, size)
        prepared = prepared or self._prepare(latents)
        identity = prepared["identity"]
        best, nonce = self._best_nonce(identity, patterns)
        log_p = self._log_p(best, identity[2])
        nonce_term = self.nonce_bits * np.log(2)
        extra = {"agreement": best / identity[2], "nonce": nonce.astype(np.float64)}
        winners = [(identity, i, int(nonce[i])) for i in range(len(latents))]
        if not prepared["search"]:
            return np.minimum(0.0, nonce_term + log_p), -np.minimum(0.0, nonce_term + log_p) / np.log(10), extra, winners
        candidates = _search_candidates()
        scored = [(self._best_nonce(reading, patterns), reading) for reading in prepared["candidates"]]
        search_log_p = np.stack([self._log_p(b, reading[2]) for (b, _), reading in scored], axis=1)
        best_j = search_log_p.argmin(1)
        best_search = search_log_p[np.arange(len(latents)), best_j]
        search_win = [(scored[j][1], i, int(scored[j][0][1][i])) for i, j in enumerate(best_j)]
        for i, readings in (stage_two or {}).items():
            for reading in readings:
                b, n = self._best_nonce(reading, patterns)
                candidate = float(self._log_p(b, reading[2])[0])
                if candidate < best_search[i]:
                    best_search[i], search_win[i] = candidate, (reading, 0, int(n[0]))
        family = len(candidates) + len(_search_candidates(SEARCH_FINE_ANGLES))
        corrected = np.minimum(np.log(2) + log_p, np.log(2 * family) + best_search) + nonce_term
        corrected = np.minimum(corrected, 0.0)
        for i in range(len(latents)):
            if best_search[i] < log_p[i]:
                winners[i] = search_win[i]
        extra.update(search_log10_p=best_search / np.log(10), search_angle=np.array([candidates[j][0] for j in best_j]),
                     search_zoom=np.array([candidates[j][1] for j in best_j]))
        return corrected, -corrected / np.log(10), extra, winners

    def _detect(self, images, key: Key) -> list[DetectionResult]:
        """As ``results_from_signal(extract(images))``, plus the image-level stage of the
        geometric search (Tree-Ring's, ``InitialNoiseWatermarker._image_undo``): unless the
        untransformed reading is already decisive, the candidate that ``_locate`` finds is
        undone on the image itself when its correlation z passes ``STAGE_TWO_Z``, and the
        image inverted again, which reads a rotated or cropped mark far better (measured on 3
        generations rotated by 15 degrees: agreement 0.54 to 0.57 latent-level, 0.64 to 0.68
        image-level). The p-value's family is the same either way."""
        latents = self.extract(images)
        if not self.search:
            return self._results(*self._scored(latents, key), key)
        prepared = self._prepare(latents)
        height, width = latents.shape[-2:]
        patterns = self.patterns(key, latents[0].numel())
        identity = self._log_p(self._best_nonce(prepared["identity"], patterns)[0], prepared["identity"][2])
        located_z, located = self._locate(prepared["undone"], _search_candidates(), patterns)

        def read(undone, angle, zoom):
            reading = self._reading(undone, _inside(height, width, angle, zoom))
            return reading, float(self._log_p(self._best_nonce(reading, patterns)[0], reading[2])[0])

        def scan_scores(image, angles):  # -log p of each angle's short reading, inverted as one batch
            undone = self._rotations_undone(self._sized(image), (height, width), angles, steps=SEARCH_SCAN_STEPS)
            return [-read(u[None], a, 1.0)[1] for u, a in zip(undone, angles)]

        stage_two: dict[int, list[tuple]] = {}
        for i, image in enumerate(images):
            if identity[i] < np.log(self.STAGE_TWO_SKIP_P) or located_z[i] < self.STAGE_TWO_Z:
                continue
            angle, zoom = located[i]
            if zoom == 1.0:  # refine on the latent (no inversion), then scan the image 1 degree either side
                near = [(a, 1.0) for a in SEARCH_FINE_ANGLES if abs(a - angle) <= 2.0 and a != 0.0]
                undone = [(_undo(latents[i:i + 1], a, 1.0) * _inside(height, width, a, 1.0)).reshape(1, -1)
                          for a, _ in near]
                angle = self._locate(undone, near, patterns)[1][0][0]
                angle = scan_angles(angle, lambda angles: scan_scores(image, angles), window=self.SCAN_WINDOW)[0]
            stage_two[i] = [read(self._image_undo(self._sized(image), (height, width), angle, zoom), angle, zoom)[0]]
        return self._results(*self._scored(latents, key, stage_two, prepared), key)

    def results_from_signal(self, latents: torch.Tensor, key: Key) -> list[DetectionResult]:
        return self._results(*self._scored(latents, key), key)

    def _identify(self, images, keys: list[Key], *, correction: str = "sidak") -> list[DetectionResult]:
        """The best of K keys, corrected for K looks. The inversion is shared by all keys and
        only the untransformed reading is tested (about 2 ms per key and image; the geometric
        search would cost 25 times that per key): a rotated or cropped image is identified by
        ``detect`` against each key instead."""
        from .base import _best_of

        latents = self.extract(images)
        prepared = self._prepare(latents, search=False)
        per_key = [self._results(*self._scored(latents, key, prepared=prepared), key) for key in keys]
        return [_best_of(method=self.name, candidates=[r[i] for r in per_key], correction=correction)
                for i in range(len(latents))]

    def _results(self, log_p, scores, extra, winners, key: Key) -> list[DetectionResult]:
        """Results with the message read, by majority vote, from each image's winning reading."""
        from dataclasses import replace

        results = self.results_from_log_p(log_p, scores, extra)
        message = self.message(key)
        out = []
        for result, (reading, row, nonce) in zip(results, winners):
            bits = self._vote(reading, row, nonce, key)
            out.append(replace(result, bits=tuple(int(b) for b in bits), bit_accuracy=float((bits == message).mean())))
        return out

    def _vote(self, reading: tuple[np.ndarray, np.ndarray, int], row: int, nonce: int, key: Key) -> np.ndarray:
        """The message under one nonce: per bit, the majority of its repetitions that were read."""
        signs, keep, _ = reading
        size = len(keep) * 8
        stream = np.unpackbits(self.patterns(key, size)[nonce] ^ self._repeated_message(key, size)).astype(bool)
        read = np.unpackbits(signs[row]).astype(bool) ^ stream
        kept = np.unpackbits(keep).astype(bool)
        owner = np.arange(size) % self.num_bits
        ones = np.bincount(owner[kept], weights=read[kept], minlength=self.num_bits)
        total = np.bincount(owner[kept], minlength=self.num_bits)
        return (2 * ones > total).astype(np.uint8)
