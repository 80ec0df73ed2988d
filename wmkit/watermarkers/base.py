"""The watermarker contract shared by every scheme.

- ``extract(images)``: the raw signal (bits, features, inverted latents).
- ``detect(images, key)``: one ``DetectionResult`` per image with a p-value.
- ``embed(images, key)``, optional: post-hoc marking of existing images.
- ``hook``, optional: a ``PipelineHook`` class, for schemes that mark at generation time
  (how they change a diffusers pipeline; ``wmkit.wrap`` applies it).

Images are a (B, 3, H, W) float tensor in [0, 1] or a list of (3, H, W)
tensors of any sizes; the same form comes back. Batches give exactly what N
single calls give.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import torch

from .. import stats
from ..errors import ConfigError
from ..imageio import as_image_list, check_size, restore_form
from ..keys import Key
from ..types import DetectionResult


class PipelineHook:
    """How a generation-time scheme marks a diffusers pipeline's outputs for one key
    (``wmkit.wrap`` applies it). Both steps are optional: Tree-Ring changes each call's
    arguments (its noise as ``latents=``), Stable Signature swaps a component (the VAE decoder)."""

    def __init__(self, watermarker: "Watermarker", key: Key):
        watermarker.check_key(key)
        self.watermarker, self.key = watermarker, key

    def patch(self, pipe) -> Callable[[], None]:
        """Change pipeline components; return the function that undoes it."""
        return lambda: None

    def call_kwargs(self, pipe, args: tuple, kwargs: dict) -> dict:
        """The keyword arguments of one pipeline call, changed (e.g. ``latents=``)."""
        return kwargs


class Watermarker(ABC):
    name: ClassVar[str]
    #: how the scheme marks a pipeline's outputs; None for post-hoc schemes (``embed`` only)
    hook: ClassVar[Optional[type[PipelineHook]]] = None
    #: the message bits a key carries (None: a zero-bit scheme)
    num_bits: Optional[int] = None
    #: the smallest image the scheme can handle: H * W and min(H, W)
    min_pixels: ClassVar[int] = 0
    min_side: ClassVar[int] = 0

    #: how the null is calibrated: "auto" (the shipped calibration, if any), a path, a model, or None
    _calibration_spec: Any = None
    # which null model calibrates the scheme's test (wmkit.calibration.NULL_MODELS): "bits" for a
    # binomial test on decoded bits, "score" for a score's analytic p-value, None: not calibrated
    null_kind: ClassVar[Optional[str]] = None
    _null: Any = None
    _null_loaded: bool = False

    @classmethod
    def marks_at_generation(cls) -> bool:
        """Whether the scheme marks through a pipeline (``wmkit.wrap``, `wmkit generate`)."""
        return cls.hook is not None

    @classmethod
    def marks_existing_images(cls) -> bool:
        """Whether ``embed`` marks a given image (Stable Signature's does, by its decoder;
        Tree-Ring's mark lives in the initial noise, so it has none)."""
        return cls.embed is not Watermarker.embed

    def pipeline_hook(self, key: Key) -> PipelineHook:
        if self.hook is None:
            raise ConfigError(f"'{self.name}' is a post-hoc scheme: mark outputs with embed(images, key)")
        return self.hook(self, key)

    def missing_default_model(self) -> Optional[str]:
        """Why the scheme's default model cannot be loaded (None when it can, or it has none)."""
        return None

    def extractor_digest(self) -> Optional[str]:
        """A digest of the reader's weights when it has any: a calibration fitted with other
        weights behind the same name is refused (``wmkit.calibration``)."""
        return None

    def first_use_note(self) -> Optional[str]:
        """What a new key costs before its first marked image, when that is worth saying
        (`wmkit keygen` prints it); None for schemes that mark at once."""
        return None

    def config(self) -> dict[str, Any]:
        """The options that change what the detector reads: they identify calibrations, so
        marking-only options (an embedding strength such as hidden's ``psnr``) stay out."""
        return {}

    @property
    def model_name(self) -> str:
        """The detector's model (a pipeline, a backbone): calibrations are per model. 'tiny' = shipped."""
        return ""

    # -- null calibration (wmkit/calibration/__init__.py) ---------------------------------------
    @property
    def null_model(self):
        """The calibrated null in use, or None (the analytic p-value is used)."""
        if not self._null_loaded:
            from ..calibration import resolve_null_model

            self._null = resolve_null_model(self, self._calibration_spec)
            self._null_loaded = True
        return self._null

    def set_calibration(self, calibration: Any) -> None:
        """A null model, a path to one, "auto" (the shipped one) or None (analytic p-values)."""
        self._calibration_spec = calibration
        self._null_loaded = False

    def fit_null(self, images, *, attacks: Any = "calibration", keys: Optional[list[Key]] = None,
                 progress: Optional[bool] = None, info: Optional[dict] = None):
        """Fit this scheme's null on unwatermarked images (and attacked copies); see `wmkit calibrate`."""
        raise ConfigError(f"'{self.name}' has no null calibration")

    def check_key(self, key: Key) -> None:
        key.check_method(self.name)

    def _images(self, images) -> tuple[list[torch.Tensor], bool]:
        image_list, batched = as_image_list(images)
        for i, img in enumerate(image_list):
            check_size(img.shape[1], img.shape[2], min_pixels=self.min_pixels, min_side=self.min_side, name=f"image {i}")
        return image_list, batched

    def embed(self, images, key: Key):
        raise ConfigError(
            f"'{self.name}' marks images at generation time; use wmkit.wrap(pipe, ...) or `wmkit generate`"
        )

    @abstractmethod
    def extract(self, images) -> Any: ...

    @abstractmethod
    def results_from_signal(self, signal, key: Key) -> list[DetectionResult]:
        """One result per image from an extracted signal (bits, features, latents) and a key."""

    def detect(self, images, key: Key) -> list[DetectionResult]:
        self.check_key(key)
        return self.results_from_signal(self.extract(images), key)

    def identify(self, images, keys: list[Key], *, correction: str = "sidak") -> list[DetectionResult]:
        """Test each image against K keys: the best key, with its p-value corrected for K looks.
        The signal is extracted once (decoding or DDIM inversion is the costly part)."""
        for key in keys:
            self.check_key(key)
        signal = self.extract(images)
        per_key = [self.results_from_signal(signal, key) for key in keys]
        return [_best_of(method=self.name, candidates=[r[i] for r in per_key], correction=correction)
                for i in range(len(per_key[0]))]

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({options})"


class BitWatermarker(Watermarker):
    """A multi-bit scheme: embeds the key's message, decodes bits, tests matches.

    The p-value is the probability that an unwatermarked image agrees with the
    message on at least as many bits. Without a calibration that assumes fair,
    independent coins (binomial); with a ``BitNullModel`` fitted on clean images
    it uses the decoder's real, biased and dependent null for this message.
    """

    null_kind: ClassVar[Optional[str]] = "bits"

    def __init__(self, *, num_bits: Optional[int], calibration: Any = "auto"):
        """``num_bits`` None: the scheme's model decides it (``num_bits`` is then overridden)."""
        if num_bits is not None and (not isinstance(num_bits, int) or isinstance(num_bits, bool) or num_bits < 1):
            raise ConfigError(f"num_bits must be a positive integer, got {num_bits!r}")
        self._num_bits = num_bits
        self._calibration_spec = calibration

    @property
    def num_bits(self) -> int:  # type: ignore[override]
        return self._num_bits

    def config(self) -> dict[str, Any]:
        return {"num_bits": self.num_bits}

    def fit_null(self, images, *, attacks: Any = "calibration", keys: Optional[list[Key]] = None,
                 progress: Optional[bool] = None, info: Optional[dict] = None):
        # the bit null is key-independent: keys are not needed to fit it
        from ..calibration.measure import calibrate_images

        return calibrate_images(self, images, attacks=attacks, progress=progress, info=info)

    # -- the scheme itself --------------------------------------------------
    def _embed_bits(self, images: list[torch.Tensor], bits: np.ndarray) -> list[torch.Tensor]:
        """The images with ``bits`` written: what ``embed`` needs from a post-hoc bit scheme
        (a scheme that marks otherwise, like Stable Signature's decoder, overrides ``embed``)."""
        raise NotImplementedError(f"{type(self).__name__} defines neither _embed_bits nor embed")

    @abstractmethod
    def decode_bits(self, images: list[torch.Tensor]) -> np.ndarray:
        """(B, num_bits) array of 0/1 decoded from each image."""

    #: write a *given* payload XORed with bits from the key's secret (see ``message``)
    masks_given_payload: ClassVar[bool] = False

    def message(self, key: Key) -> np.ndarray:
        """The bits written and read. A derived message is drawn from the key's secret already.
        With ``masks_given_payload``, a message that was given (by the user, or stored by
        keygen's screening) is XORed with a mask drawn from the secret, so that over keys the
        written bits are uniformly random whatever the payload. Readers give near-constant
        bits for images with little to read (a flat crop; a smooth one after JPEG: mostly
        zeros for an extractor network; the same coins for identical blank images); without
        the mask a regular payload such as all zeros, or one copied from such a reading,
        lines up with them, and unmarked images test positive for that key on photo kinds no
        calibration saw (issue 24)."""
        self.check_key(key)
        bits = key.bits(self.num_bits)
        return bits ^ self._payload_mask(key) if self.masks_given_payload and key.message is not None else bits

    def _payload_mask(self, key: Key) -> np.ndarray:
        # named for the extractor schemes that introduced it: another name would change what
        # their keys write
        return key.rng("extractor/payload-mask").integers(0, 2, size=self.num_bits, dtype=np.uint8)

    def embed(self, images, key: Key):
        bits = self.message(key)
        image_list, batched = self._images(images)
        return restore_form(self._embed_bits(image_list, bits), batched)

    def extract(self, images) -> np.ndarray:
        image_list, _ = self._images(images)
        return self.decode_bits(image_list)

    def results_from_signal(self, bits: np.ndarray, key: Key) -> list[DetectionResult]:
        """The test of each image's bits against the key; a masked payload's reported bits are
        unmasked, so `--show-bits` shows the payload."""
        results = self.results_from_bits(bits, self.message(key))
        if not (self.masks_given_payload and key.message is not None):
            return results
        mask = self._payload_mask(key)
        return [replace(r, bits=tuple(int(b) for b in np.array(r.bits, dtype=np.uint8) ^ mask)) for r in results]

    def results_from_bits(self, bits: np.ndarray, message: np.ndarray) -> list[DetectionResult]:
        bits = np.asarray(bits, dtype=np.uint8).reshape(-1, self.num_bits)
        matches = (bits == message[None, :]).sum(axis=1)
        null = self.null_model
        log_p, log_p_fair = reported_log_p_values(null, message, matches, self.num_bits)
        return [
            DetectionResult(
                method=self.name,
                p_value=float(np.exp(log_p[i])),
                score=float(matches[i]),
                p_value_analytic=float(np.exp(log_p_fair[i])),
                calibrated=null is not None,
                bits=tuple(int(b) for b in bits[i]),
                bit_accuracy=float(matches[i]) / self.num_bits,
                extra={"log10_p_value": float(log_p[i] / np.log(10))},
            )
            for i in range(len(bits))
        ]


def reported_log_p_values(null, message: np.ndarray, matches, num_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(reported, fair-coin) log p-values of bit-match counts for one message.

    Two nulls, one p-value valid under both: a clean image (the calibration ``null`` models the
    decoder's bias there) and an image marked with *another* key of the scheme (there the
    decoded bits are that key's message, and over random keys the matches are exactly
    Binomial(n, 1/2): the fair-coin p-value). Measured: the calibrated p-value alone flagged
    16 of 600 other-key tests at 1e-2 for RivaGAN (6 expected). Without a calibration the
    fair-coin p-value is the one reported."""
    log_p_fair = stats.log_binomial_sf(matches, num_bits, 0.5)
    log_p = np.maximum(null.log_p_value(message, matches), log_p_fair) if null is not None else log_p_fair
    return log_p, log_p_fair


def _best_of(*, method: str, candidates: list[DetectionResult], correction: str) -> DetectionResult:
    """The smallest p-value among K keys, corrected for the K comparisons (stats.multi_key_correction)."""
    from dataclasses import replace

    # every scheme reports the exact log form, which does not underflow
    log_ps = np.array([r.extra["log10_p_value"] * np.log(10) for r in candidates])
    best = int(np.argmin(log_ps))
    k = len(candidates)
    log_p = float(stats.log_multi_key_correction(log_ps[best], k, method=correction))
    winner = candidates[best]
    log_p_analytic = float(stats.log_multi_key_correction(np.log(max(winner.p_value_analytic, 1e-320)), k, method=correction))
    extra = dict(winner.extra, key_index=best, num_keys=k, uncorrected_p_value=winner.p_value, log10_p_value=log_p / np.log(10))
    return replace(winner, method=method, p_value=float(np.exp(log_p)), p_value_analytic=float(np.exp(log_p_analytic)), extra=extra)


class ScoreWatermarker(Watermarker):
    """A scheme whose detector turns an extracted signal into an analytic p-value
    (Tree-Ring: inverted latents; SSL zero-bit: a feature vector). A ScoreNullModel
    fitted on clean images (``fit_null``) recalibrates it; both are reported."""

    null_kind: ClassVar[Optional[str]] = "score"

    @abstractmethod
    def analytic_log_p(self, signal, key: Key) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(log p-values, scores, extra per-image fields) of an extracted signal against a key."""

    def results_from_signal(self, signal, key: Key) -> list[DetectionResult]:
        return self.results_from_log_p(*self.analytic_log_p(signal, key))

    def results_from_log_p(self, log_p_analytic: np.ndarray, scores: np.ndarray,
                           extra: dict[str, np.ndarray]) -> list[DetectionResult]:
        """Results from analytic log p-values, recalibrated by the null model when there is one."""
        null = self.null_model
        log_p = null.log_p_value(log_p_analytic) if null is not None else log_p_analytic
        return [
            DetectionResult(
                method=self.name,
                p_value=float(np.exp(log_p[i])),
                score=float(scores[i]),
                p_value_analytic=float(np.exp(log_p_analytic[i])),
                calibrated=null is not None,
                extra={"log10_p_value": float(log_p[i] / np.log(10)), **{k: float(v[i]) for k, v in extra.items()}},
            )
            for i in range(len(log_p))
        ]

    def fit_null(self, images, *, attacks: Any = "calibration", keys: Optional[list[Key]] = None,
                 progress: Optional[bool] = None, info: Optional[dict] = None):
        """Null of the analytic p-value on unwatermarked images (and attacked copies).

        Pooled over ``keys`` (default: 4 seeded keys): the recalibration should
        hold for any key, and pooling keeps one calibration per model."""
        from ..calibration.measure import attacked_variants
        from ..calibration import fit_score_null
        from ..keys import generate_key

        keys = keys or [generate_key(self.name, seed=900 + i) for i in range(4)]
        log_ps = []
        for variant in attacked_variants(images, attacks=attacks, progress=progress,
                                         min_pixels=self.min_pixels, min_side=self.min_side):
            signal = self.extract([variant])
            log_ps += [float(self.analytic_log_p(signal, key)[0][0]) for key in keys]
        info = dict(info or {}, num_keys=len(keys), attacks=attacks if isinstance(attacks, str) else None)
        return fit_score_null(np.array(log_ps), method=self.name, config=self.config(), model=self.model_name, info=info)


def break_ties(bits: np.ndarray, ties: np.ndarray, image: torch.Tensor) -> np.ndarray:
    """Bits a reader could not read (a value of exactly 0: an image with nothing to read,
    e.g. a flat crop) become fair coins, seeded by the image's 8-bit pixels so a second reading
    agrees. Read as 0 they would be one fixed message that every such image matches."""
    pixels = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    seed = int.from_bytes(hashlib.sha256(pixels.tobytes()).digest()[:8], "little")
    out = bits.copy()
    out[ties] = np.random.default_rng(seed).integers(0, 2, int(ties.sum()))
    return out
