"""Stable Signature (Fernandez et al., 2023): the message lives in a fine-tuned VAE decoder.

Marking happens in the model: for a key, a copy of the pipeline's VAE decoder is fine-tuned
(``wmkit.watermarkers.decoder_finetune.finetune_decoder``) so that everything it decodes carries the key's 48-bit
message for the frozen extractor. ``wmkit.wrap(pipe, "stable_signature", key)`` swaps that
decoder in (``DecoderSwap``) and back out on ``unwrap()``; ``embed`` on an existing image adds the
watermark residual (round trip through the key's decoder minus the original's) to it. The decoder for a key is fine-tuned on first use, with a
progress bar, and cached as safetensors under ``$WMKIT_CACHE`` (default
``~/.cache/wmkit``)/stable_signature, named by pipeline, extractor and key fingerprint.

Detection reads the bits with the (whitened) extractor: binomial test, or the calibrated
null when one is fitted (``wmkit calibrate``); identification among N keys corrects for N.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import torch

from ..errors import ConfigError, WeightsError
from ..keys import Key
from ..registry import register_watermarker
from .base import PipelineHook
from .decoder_finetune import DEFAULT_IMAGE_WEIGHT, DEFAULT_LR, DEFAULT_SIZE, DEFAULT_STEPS
from .hidden import DEFAULT_EXTRACTOR, ExtractorBits

# clean crops (side, count) of the calibration photos that an extractor_front's whitening is fitted on
FRONT_WHITENING_CROPS = ((128, 400), (256, 300))
FRONT_WHITENING_SEED = 101


@contextmanager
def _file_lock(path: Path):
    """An exclusive advisory lock (fcntl) held while the block runs."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _no_lock():
    yield


def cache_dir() -> Path:
    from ..paths import cache_dir as wmkit_cache

    return wmkit_cache() / "stable_signature"


def shipped_decoder_path(name: str) -> Path:
    """Where a decoder shipped with the weights would lie: only the public demo key's
    (``wmkit.demo.DEMO_KEY_SEED``), named exactly like its cache file, so it matches only
    that key on the pipeline, VAE and extractor it was fine-tuned for."""
    from ..paths import weights_dir

    return weights_dir() / "demo-decoders" / name


class DecoderSwap(PipelineHook):
    """The key's fine-tuned decoder in place of the pipeline's VAE decoder while wrapped."""

    def patch(self, pipe) -> Callable[[], None]:
        if pipe is not self.watermarker.pipe:
            raise ConfigError("wrap the pipeline this stable_signature instance was made for (create it with pipeline=pipe)")
        original = pipe.vae.decoder
        pipe.vae.decoder = self.watermarker.watermarked_decoder(self.key)

        def restore() -> None:
            pipe.vae.decoder = original

        return restore


@register_watermarker("stable_signature")
class StableSignature(ExtractorBits):
    """Stable Signature: a key-specific fine-tuned VAE decoder; extractor bits, binomial test."""

    hook = DecoderSwap
    min_side: ClassVar[int] = 32

    def __init__(self, *, pipeline: Any = "tiny", extractor: Any = DEFAULT_EXTRACTOR, finetune_steps: int = DEFAULT_STEPS,
                 finetune_size: int = DEFAULT_SIZE, finetune_lr: float = DEFAULT_LR, finetune_image_weight: float = DEFAULT_IMAGE_WEIGHT,
                 extractor_front: Optional[float] = None, decoder: Optional[str] = None, calibration: Any = "auto"):
        """``extractor_front``: read only the luminance, low-passed by this many pixels
        (``models.hidden.with_front_end``; its whitening is refitted on the bundled calibration
        photos on first use). Decoders fine-tuned against it write a mark that survives JPEG;
        at the default image weight it costs about 4 dB of PSNR (docs/stable_signature.md)."""
        if not isinstance(finetune_steps, int) or finetune_steps < 1:
            raise ConfigError(f"finetune_steps must be a positive integer, got {finetune_steps!r}")
        if not isinstance(finetune_size, int) or finetune_size < 32 or finetune_size % 8:
            raise ConfigError(f"finetune_size must be a multiple of 8 of at least 32 pixels, got {finetune_size!r}")
        if not isinstance(finetune_lr, (int, float)) or not 0 < finetune_lr < 1:
            raise ConfigError(f"finetune_lr must be a number in (0, 1), got {finetune_lr!r}")
        if not isinstance(finetune_image_weight, (int, float)) or finetune_image_weight < 0:
            raise ConfigError(f"finetune_image_weight must be a non-negative number, got {finetune_image_weight!r}")
        if extractor_front is not None and (isinstance(extractor_front, bool) or not isinstance(extractor_front, (int, float))
                                            or not 0 <= extractor_front <= 8):
            raise ConfigError(f"extractor_front must be a blur in pixels in [0, 8] (or None), got {extractor_front!r}")
        super().__init__(extractor=extractor, calibration=calibration)
        self._pipeline_spec = pipeline
        self._pipe = None
        self.finetune_steps, self.finetune_size, self.finetune_lr = finetune_steps, finetune_size, float(finetune_lr)
        self.finetune_image_weight = float(finetune_image_weight)
        self.extractor_front = None if extractor_front is None else float(extractor_front)
        self._front: Optional[torch.nn.Module] = None
        self._decoder_path = decoder  # an explicit fine-tuned decoder file (`wmkit finetune-decoder -o`)
        self._decoders: dict[str, torch.nn.Module] = {}
        self._vae_digest: Optional[str] = None

    @property
    def extractor(self) -> torch.nn.Module:
        plain = super().extractor
        if self.extractor_front is None:
            return plain
        if self._front is None:
            from .. import data
            from ..models.hidden import HiddenExtractor, WhitenedExtractor, with_front_end

            if not (isinstance(plain, WhitenedExtractor) and isinstance(plain.extractor, HiddenExtractor)):
                raise ConfigError("extractor_front needs a wmkit HiDDeN extractor (a folder), not a TorchScript one")
            clean = [img for side, count in FRONT_WHITENING_CROPS
                     for img in data.crops(count, size=side, group="calibration", seed=FRONT_WHITENING_SEED)]
            self._front = with_front_end(plain, self.extractor_front, clean)
        return self._front

    def config(self) -> dict[str, Any]:
        front = {} if self.extractor_front is None else {"extractor_front": self.extractor_front}
        return {**super().config(), **front}

    # -- the pipeline whose decoder is fine-tuned ---------------------------------------------------
    @property
    def pipe(self):
        if self._pipe is None:
            from ..diffusion import resolve_pipeline

            self._pipe = resolve_pipeline(self._pipeline_spec, share=False)
        return self._pipe

    def pipeline_name(self) -> str:
        from ..diffusion import pipeline_label

        return pipeline_label(self._pipeline_spec)

    def vae_digest(self) -> str:
        """12 hex digits of sha256 over the pipeline's *original* VAE decoder weights (the
        ones every watermarked decoder is fine-tuned from)."""
        if self._vae_digest is None:
            from ..models import weights_digest

            vae = self.pipe.vae
            parts = {f"{part}.": getattr(vae, part) for part in ("post_quant_conv", "decoder") if getattr(vae, part, None) is not None}
            self._vae_digest = weights_digest(parts)
        return self._vae_digest

    # -- decoders -------------------------------------------------------------------------------------
    def decoder_cache_path(self, key: Key) -> Path:
        # named by what the decoder is for: pipeline (its name and its original decoder's weights,
        # so a retrained or replaced VAE behind the same name never meets a decoder fine-tuned
        # from the old one), extractor (name and weights, likewise) and key. Not by the recipe:
        # a decoder made with `wmkit finetune-decoder --steps N` is the one later calls use (its
        # metadata records the steps; --overwrite makes a new one)
        tag = f"{self.pipeline_name()}|{self.vae_digest()}|{self.model_name}|{self.extractor_digest()}"
        digest = hashlib.sha256(tag.encode()).hexdigest()[:12]
        return cache_dir() / f"decoder-{digest}-{self._key_name(key)}.safetensors"

    def _key_name(self, key: Key) -> str:
        """The key's fingerprint (its secret), and for a key with a given message the written bits
        too: two keys with one secret and different messages need different decoders, and decoders
        fine-tuned before given messages were masked (`BitWatermarker.message`) are not reused."""
        if key.message is None:
            return key.fingerprint
        return f"{key.fingerprint}-m{hashlib.sha256(self.message(key).tobytes()).hexdigest()[:8]}"

    def watermarked_decoder(self, key: Key, *, progress: bool = True) -> torch.nn.Module:
        """The key's fine-tuned decoder: from memory, the given file, the cache, or fine-tuned now."""
        self.check_key(key)
        name = self._key_name(key)
        if name in self._decoders:
            return self._decoders[name]
        import copy

        from safetensors.torch import load_file

        vae = self.pipe.vae
        path = Path(self._decoder_path) if self._decoder_path else self.decoder_cache_path(key)
        if self._decoder_path and not path.is_file():
            raise WeightsError(f"{path}: no such decoder file (make one with `wmkit finetune-decoder`)")
        shipped = shipped_decoder_path(path.name)
        read_only = bool(self._decoder_path) or (not path.is_file() and shipped.is_file())
        if read_only and not self._decoder_path:
            path = shipped  # the public demo key's decoder, shipped so the demo need not fine-tune
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        # one lock per decoder: concurrent first uses of a key fine-tune it once, the others wait
        with _file_lock(path.with_name(path.name + ".lock")) if not read_only else _no_lock():
            if path.is_file():
                decoder = copy.deepcopy(vae.decoder)
                try:
                    state = load_file(str(path))
                    decoder.load_state_dict({k: v.to(next(vae.decoder.parameters()).dtype) for k, v in state.items()})
                except Exception as exc:  # safetensors raises its own error type for damaged files
                    remedy = ("delete it and the decoder is fine-tuned again on next use "
                              "(or run `wmkit finetune-decoder -k KEY --overwrite`)") if not self._decoder_path else \
                        "make it again with `wmkit finetune-decoder`"
                    raise WeightsError(f"{path}: damaged or not a decoder for this pipeline's VAE "
                                       f"({str(exc).splitlines()[0]}); {remedy}") from None
            else:
                from .decoder_finetune import finetune_decoder

                decoder, report = finetune_decoder(vae, self.extractor, self.message(key), steps=self.finetune_steps,
                                                   size=self.finetune_size, lr=self.finetune_lr,
                                                   image_weight=self.finetune_image_weight, progress=progress)
                from safetensors.torch import save

                from ..atomic import write_bytes

                # written whole or not at all: a killed run never leaves a damaged cache
                write_bytes(path, save({k: v.contiguous() for k, v in decoder.state_dict().items()},
                                       metadata={"key_fingerprint": key.fingerprint,
                                                 "bit_accuracy": f"{report.bit_accuracy:.4f}",
                                                 "psnr_db": f"{report.psnr_db:.2f}", "steps": str(report.steps)}),
                            overwrite=True)
        decoder.eval().requires_grad_(False)
        self._decoders[name] = decoder
        return decoder

    def first_use_note(self) -> str:
        """What a new key costs before its first marked image (printed by `wmkit keygen`)."""
        return (f"the first embed or generate with this key fine-tunes its VAE decoder ({self.finetune_steps} steps, "
                f"about 3 minutes on 2 CPU cores for the tiny pipeline; `wmkit finetune-decoder -k KEY` does it ahead "
                f"of time) and caches it in {cache_dir()} (about 10 MB per key)")

    # -- marking ------------------------------------------------------------------------------------
    def round_trips(self, images, key: Key) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each image through the VAE with the original decoder and with the key's decoder."""
        from ..attacks.regeneration import pad_to_multiple, vae_factor
        from .decoder_finetune import decode_with

        decoder = self.watermarked_decoder(key)
        image_list, _ = self._images(images)
        vae = self.pipe.vae
        dtype = next(vae.parameters()).dtype
        plain, marked = [], []
        with torch.no_grad():
            for img in image_list:
                x, (height, width) = pad_to_multiple(img[None].float(), vae_factor(self.pipe))
                z = vae.encode((x * 2 - 1).to(dtype)).latent_dist.mean
                for out, dec in ((plain, vae.decoder), (marked, decoder)):
                    out.append(decode_with(vae, dec, z).float().clamp(0, 1)[0, :, :height, :width])
        return plain, marked

    def embed(self, images, key: Key):
        """Post-hoc use: the image plus the key's *watermark residual*, the VAE round trip through
        the key's decoder minus the round trip through the original one. The photo keeps its own
        detail (a round trip through the small VAE alone costs about 24 dB) and gets exactly the
        mark the decoder writes on that content."""
        from ..imageio import restore_form

        image_list, batched = self._images(images)
        plain, marked = self.round_trips(image_list, key)
        out = [(img.float() + (m - p)).clamp(0, 1).to(img.dtype) for img, p, m in zip(image_list, plain, marked)]
        return restore_form(out, batched)
