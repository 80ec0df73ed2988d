"""Stable Signature's decoder fine-tuning (Fernandez et al., 2023): root a message in a VAE decoder.

    decoder = finetune_decoder(pipe.vae, extractor, message)   # a trained copy of pipe.vae.decoder

The extractor stays frozen; only a copy of the VAE decoder is trained, so that every image it
decodes carries ``message`` while looking like the original decoder's output. Per step: a
batch of latents (VAE encodings of training crops, computed once) goes through the original
decoder (the target, computed once too) and through the trainable copy; the loss is

    bit_weight x BCE(extractor(copy(z)), message) + image_weight x [(1 - SSIM) + 10 x MSE](copy(z), original(z))

SSIM (kornia) is the perceptual part (nothing to download, unlike Watson-VGG/LPIPS); the MSE
term pins colours, which SSIM tolerates. For wmkit's own (folding) extractors a third term,
``phase_margin_loss``, asks the decoder's phase to stand out under the extractor's own phase
search, so the mark is found again after a crop. The paper's settings: 100 steps, batch 4,
AdamW, lr 1e-4 with warm-up and cosine decay; the same here, except for measured departures
(16 unseen photos, the GPU-trained tiny VAE): lr 1e-3 (1e-4 barely moves the tiny decoder:
0.60 bit accuracy after 100 steps; pass lr=1e-4 for Stable Diffusion's VAE, as in the paper);
200 steps on 128 training crops, a quarter of them blurred (``smooth_crops``), instead of 100
on 32: 31.3 dB and bit accuracy 0.988 (every photo detected at 1e-6; after a 50% crop 0.974)
against 30.3 dB and 0.966 (crop: 0.52) for 100 steps on 32 crops without the phase term;
and crops of 128 px instead of 256 (the decoder is convolutional, a step costs a quarter).
While training, a wmkit extractor reads the bits at phase 0 and at the image's own scale
(``reading_as_trained``): the decoder writes on its own 8 x 8 grid. Works for any diffusers
AutoencoderKL.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..models.hidden import HiddenExtractor, reading_as_trained


@dataclass
class FinetuneReport:
    steps: int
    seconds: float
    bit_accuracy: float  # on the training latents, at the end
    psnr_db: float  # fine-tuned vs original decoder on the training latents, at the end
    losses: list[float]


def decode_with(vae, decoder, latents: torch.Tensor) -> torch.Tensor:
    """AutoencoderKL.decode with ``decoder`` in place of vae.decoder: latents -> [0, 1] images."""
    z = vae.post_quant_conv(latents) if getattr(vae, "post_quant_conv", None) is not None else latents
    return (decoder(z) + 1) / 2


# The recipe's defaults (Stable Signature's options default to these too)
DEFAULT_STEPS = 200  # the paper's 100 with the SSIM floor cost PSNR and bits on the tiny VAE (docs/stable_signature.md)
DEFAULT_SIZE = 128  # side of the training crops
DEFAULT_LR = 1e-3
DEFAULT_IMAGE_WEIGHT = 2.0  # of the image loss against the bit loss


# one function on purpose: the setup, the loop and the final measurement of one recipe, read top to bottom
def finetune_decoder(
    vae,
    extractor: torch.nn.Module,
    message: Sequence[int],
    *,
    images: Optional[Sequence[torch.Tensor]] = None,
    steps: int = DEFAULT_STEPS,
    batch: int = 4,
    size: int = DEFAULT_SIZE,
    lr: float = DEFAULT_LR,
    bit_weight: float = 1.0,
    image_weight: float = DEFAULT_IMAGE_WEIGHT,
    phase_weight: float = 1.0,
    num_images: int = 128,
    smooth_share: float = 0.25,
    seed: int = 0,
    progress: bool = True,
) -> tuple[torch.nn.Module, FinetuneReport]:
    """A fine-tuned copy of ``vae.decoder`` whose outputs carry ``message`` (read by ``extractor``).

    ``images``: training images in [0, 1] (default: ``num_images`` crops of the offline
    *calibration* photos at ``size``); their sides must be multiples of 8.
    ``phase_weight``: weight of the phase-margin term (wmkit extractors only, see
    ``phase_margin_loss``; 0 leaves it out). ``smooth_share``: the share of the default
    training crops that are blurred (``smooth_crops``), so the decoder also learns to mark
    smooth images.
    """
    import time

    from kornia.losses import ssim_loss

    from ..progress import progress as progress_display

    bits = torch.as_tensor(np.asarray(message), dtype=torch.float32).flatten()
    if steps < 1 or batch < 1:
        raise ConfigError(f"steps and batch must be positive, got {steps} and {batch}")
    if images is None:
        from .. import data

        images = smooth_crops(data.crops(num_images, size=size, group="calibration", seed=seed), smooth_share, seed)
    images = [img.float() for img in images]
    if any(img.shape[-1] % 8 or img.shape[-2] % 8 for img in images):
        raise ConfigError("training images need sides that are multiples of 8")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    dtype = next(vae.parameters()).dtype
    with torch.no_grad():
        latents = torch.cat([vae.encode((img[None] * 2 - 1).to(dtype)).latent_dist.mean.float() for img in images])
        targets = torch.cat([decode_with(vae, vae.decoder, z[None].to(dtype)).float().clamp(0, 1) for z in latents])
    with torch.no_grad():
        width = int(extractor(targets[:1]).shape[-1])
    if width != bits.numel():
        raise ConfigError(f"the message has {bits.numel()} bits, the extractor reads {width}")
    decoder = copy.deepcopy(vae.decoder).float().train()
    for p in extractor.parameters():
        p.requires_grad_(False)
    extractor.eval()
    post_quant = copy.deepcopy(vae.post_quant_conv).float() if getattr(vae, "post_quant_conv", None) is not None else None
    folding = next((m for m in extractor.modules() if isinstance(m, HiddenExtractor)), None)

    def decode(z):
        return (decoder(post_quant(z) if post_quant is not None else z) + 1) / 2

    optimiser = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    start, losses = time.perf_counter(), []
    bar = progress_display(range(steps), desc="fine-tune decoder", unit="step", enabled=None if progress else False)
    # the decoder writes at the image's own scale, on its own grid: no search while training
    with reading_as_trained(extractor):
        for step in bar:
            scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
            for group in optimiser.param_groups:
                group["lr"] = lr * scale
            index = torch.randint(len(latents), (min(batch, len(latents)),), generator=generator)
            out = decode(latents[index])
            logits = extractor(out)
            bit_loss = F.binary_cross_entropy_with_logits(logits, bits.expand_as(logits))
            target = targets[index]
            image_loss = 2 * ssim_loss(out, target, window_size=11) + 10 * F.mse_loss(out, target)
            loss = bit_weight * bit_loss + image_weight * image_loss
            if folding is not None and phase_weight > 0:
                loss = loss + phase_weight * phase_margin_loss(folding, out)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            if progress:
                bar.set_postfix(bits=f"{((logits.detach() > 0).float() == bits).float().mean().item():.3f}", loss=f"{losses[-1]:.3f}")
    decoder.eval()
    with torch.no_grad():
        accs, psnrs = [], []
        for i in range(0, len(latents), 8):
            out = decode(latents[i:i + 8]).clamp(0, 1)
            accs.append(((extractor(out) > 0).float() == bits).float().mean(1))
            mse = (out - targets[i:i + 8]).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
            psnrs.append(-10 * torch.log10(mse))
    report = FinetuneReport(steps=steps, seconds=time.perf_counter() - start, bit_accuracy=float(torch.cat(accs).mean()),
                            psnr_db=float(torch.cat(psnrs).mean()), losses=losses)
    return decoder.to(dtype), report


PHASE_MARGIN = math.log(2.0)  # phase 0 must stand out at least twice as far as any other phase


def phase_margin_loss(extractor: HiddenExtractor, images: torch.Tensor, sharpness: float = 8.0) -> torch.Tensor:
    """Hinge on how far the decoder's own phase (0) stands out, by the extractor's own phase rule.

    Detection does not know where a crop put the tile: ``HiddenExtractor`` reads the phase whose
    logits sit furthest from the average over phases. A decoder trained only to be read *at*
    phase 0 can write a tile that other phases read almost as strongly (measured on the GPU-trained
    tiny VAE: a strong period-4 component, so phases shifted by 4 px stood out as much as phase 0;
    after a crop resized back the search chose a wrong phase on 13 of 16 photos though phase 0
    read every bit). The term asks the log distance at phase 0 to beat a soft maximum over the
    other phases by ``PHASE_MARGIN``."""
    logits, _ = extractor.phase_logits(images)
    distance = (logits - logits.mean(1, keepdim=True)).pow(2).sum(-1).clamp_min(1e-12).log()  # (B, phases)
    others = torch.logsumexp(sharpness * distance[:, 1:], dim=1) / sharpness
    return F.relu(others - distance[:, 0] + PHASE_MARGIN).mean()


def smooth_crops(images: Sequence[torch.Tensor], share: float, seed: int = 0) -> list[torch.Tensor]:
    """Every image, with the last ``share`` of them Gaussian-blurred (sigma 1.5 to 4 px).

    Why: the decoder learns where to put the mark from its training crops, and photo crops
    are mostly texture. On a nearly flat image (a motion-blurred grey clock among the
    evaluation photos) the SSIM term kept the mark so faint that no phase read it (bit
    accuracy 0.52-0.83 while textured photos read 1.00); generated images have such smooth
    regions too (sky, studio backdrops)."""
    from kornia.filters import gaussian_blur2d

    images = list(images)
    count = int(round(share * len(images)))
    rng = np.random.default_rng(seed + 7)
    for i in range(len(images) - count, len(images)):
        sigma = float(rng.uniform(1.5, 4.0))
        kernel = 2 * int(3 * sigma) + 1
        images[i] = gaussian_blur2d(images[i][None], (kernel, kernel), (sigma, sigma), border_type="reflect")[0]
    return images
