"""VAE helpers, DDIM inversion and generation from given initial latents.

Images are float tensors in [0, 1], either (B, 3, H, W) or a list of (3, H, W)
of one size; H and W must be multiples of the VAE factor (8 for SD and
wmkit-tiny). Latents are the *scaled* latents the UNet works on (SD's
``vae.config.scaling_factor`` applied), (B, 4, H/8, W/8).

DDIM inversion runs the deterministic DDIM sampler backwards with diffusers'
``DDIMInverseScheduler`` (built from the pipeline's scheduler config): from the
clean latents of an image to an estimate of the initial noise ``z_T`` that
would generate it. The default conditioning is the empty prompt at guidance 1
(no classifier-free guidance), as in Tree-Ring, where the prompt of a test
image is unknown.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from ..errors import ConfigError
from .pipeline import check_pipeline

ImagesLike = Union[torch.Tensor, Sequence[torch.Tensor]]


def _as_batch(images: ImagesLike) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        batch = images[None] if images.dim() == 3 else images
    else:
        images = list(images)
        if not images:
            raise ConfigError("no images given")
        if len({tuple(im.shape) for im in images}) > 1:
            raise ConfigError("images of different sizes: resize them to one size before encoding them as a batch")
        batch = torch.stack(list(images))
    if batch.dim() != 4 or batch.shape[1] != 3:
        raise ConfigError(f"expected images (B, 3, H, W) in [0, 1], got shape {tuple(batch.shape)}")
    return batch


def _factor(pipe) -> int:
    return int(getattr(pipe, "vae_scale_factor", None) or 2 ** (len(pipe.vae.config.block_out_channels) - 1))


def _device(pipe) -> torch.device:
    return getattr(pipe, "_execution_device", None) or pipe.unet.device


def _scale_shift(pipe) -> tuple[float, float]:
    config = pipe.vae.config
    return float(getattr(config, "scaling_factor", 1.0) or 1.0), float(getattr(config, "shift_factor", None) or 0.0)


@torch.no_grad()
def encode_images(pipe, images: ImagesLike, *, batch_size: int = 8, sample_posterior: bool = False,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Images in [0, 1] -> scaled latents (B, C, H/8, W/8). The posterior mean by
    default (deterministic); ``sample_posterior=True`` draws from it with ``generator``."""
    check_pipeline(pipe)
    batch = _as_batch(images)
    factor = _factor(pipe)
    if batch.shape[-1] % factor or batch.shape[-2] % factor:
        raise ConfigError(f"image size {tuple(batch.shape[-2:])} is not a multiple of the VAE factor {factor}")
    scale, shift = _scale_shift(pipe)
    vae = pipe.vae
    out = []
    for i in range(0, len(batch), batch_size):
        x = batch[i:i + batch_size].to(device=vae.device, dtype=vae.dtype) * 2 - 1
        dist = vae.encode(x).latent_dist
        z = dist.sample(generator) if sample_posterior else dist.mean
        out.append((z.float() - shift) * scale)
    return torch.cat(out)


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor, *, batch_size: int = 8) -> torch.Tensor:
    """Scaled latents -> images (B, 3, H, W) in [0, 1] (float32, on the latents' device)."""
    check_pipeline(pipe)
    scale, shift = _scale_shift(pipe)
    vae = pipe.vae
    out = []
    for i in range(0, len(latents), batch_size):
        z = latents[i:i + batch_size].to(device=vae.device, dtype=vae.dtype) / scale + shift
        out.append(((vae.decode(z).sample.float() + 1) / 2).clamp(0, 1).to(latents.device))
    return torch.cat(out)


def _conditioning(pipe, prompts: list[str], guidance_scale: float, height: int, width: int,
                  negative_prompt: Optional[str] = None) -> tuple[torch.Tensor, Optional[dict]]:
    """UNet conditioning for each prompt: (encoder_hidden_states, added_cond_kwargs), with the
    unconditional half first when classifier-free guidance is on (guidance_scale > 1)."""
    device, cfg = _device(pipe), guidance_scale > 1.0
    if getattr(pipe, "text_encoder_2", None) is not None or "text_encoder_2" in getattr(pipe, "components", {}):  # SDXL
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=cfg,
            negative_prompt=[negative_prompt or ""] * len(prompts) if cfg else None,
        )
        proj = pipe.text_encoder_2.config.projection_dim if pipe.text_encoder_2 is not None else int(pooled.shape[-1])
        time_ids = pipe._get_add_time_ids((height, width), (0, 0), (height, width), dtype=embeds.dtype,
                                          text_encoder_projection_dim=proj).to(device).repeat(len(prompts), 1)
        if cfg:
            embeds, pooled, time_ids = torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled]), torch.cat([time_ids, time_ids])
        return embeds, {"text_embeds": pooled, "time_ids": time_ids}
    embeds, negative = pipe.encode_prompt(
        prompts, device, 1, cfg, negative_prompt=[negative_prompt or ""] * len(prompts) if cfg else None,
    )
    return (torch.cat([negative, embeds]) if cfg else embeds), None


def _eps(pipe, z: torch.Tensor, t, embeds, added, guidance_scale: float) -> torch.Tensor:
    cfg = guidance_scale > 1.0
    model_in = torch.cat([z, z]) if cfg else z
    kwargs = {"added_cond_kwargs": added} if added is not None else {}
    eps = pipe.unet(model_in.to(pipe.unet.dtype), t, encoder_hidden_states=embeds, **kwargs).sample.float()
    if cfg:
        uncond, cond = eps.chunk(2)
        eps = uncond + guidance_scale * (cond - uncond)
    return eps


def _prompt_list(prompt: Union[str, Sequence[str]], n: int) -> list[str]:
    if isinstance(prompt, str):
        return [prompt] * n
    prompts = list(prompt)
    if len(prompts) != n:
        raise ConfigError(f"{len(prompts)} prompts for {n} images: give one prompt or one per image")
    return prompts


@torch.no_grad()
def invert_latents(pipe, latents: torch.Tensor, *, num_steps: int = 50, prompt: Union[str, Sequence[str]] = "",
                   guidance_scale: float = 1.0, batch_size: int = 8) -> torch.Tensor:
    """DDIM inversion of clean scaled latents -> estimated initial latents z_T."""
    check_pipeline(pipe)
    if num_steps < 1:
        raise ConfigError("num_steps must be at least 1")
    from diffusers import DDIMInverseScheduler

    prompts = _prompt_list(prompt, len(latents))
    factor = _factor(pipe)
    height, width = latents.shape[-2] * factor, latents.shape[-1] * factor
    device = _device(pipe)
    out = []
    for i in range(0, len(latents), batch_size):
        scheduler = DDIMInverseScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(num_steps, device=device)
        embeds, added = _conditioning(pipe, prompts[i:i + batch_size], guidance_scale, height, width)
        z = latents[i:i + batch_size].to(device=device, dtype=torch.float32)
        for t in scheduler.timesteps:
            eps = _eps(pipe, z, t, embeds, added, guidance_scale)
            z = scheduler.step(eps, t, z).prev_sample
        out.append(z.to(latents.device))
    return torch.cat(out)


def invert(pipe, images: ImagesLike, *, num_steps: int = 50, prompt: Union[str, Sequence[str]] = "",
           guidance_scale: float = 1.0, generator: Optional[torch.Generator] = None, batch_size: int = 8) -> torch.Tensor:
    """Images in [0, 1] -> the DDIM-inverted initial latents (B, C, H/8, W/8).

    The images are VAE-encoded (posterior mean; with ``generator`` a posterior
    sample drawn from it), then DDIM is run backwards for ``num_steps`` with the
    given prompt (default: empty) and guidance (default 1: no guidance)."""
    latents = encode_images(pipe, images, batch_size=batch_size, sample_posterior=generator is not None, generator=generator)
    return invert_latents(pipe, latents, num_steps=num_steps, prompt=prompt, guidance_scale=guidance_scale,
                          batch_size=batch_size)


def initial_latents(pipe, n: int, *, height: Optional[int] = None, width: Optional[int] = None,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Standard normal initial latents (n, C, H/8, W/8) for ``generate`` (on the CPU, float32)."""
    factor = _factor(pipe)
    height = height or pipe.unet.config.sample_size * factor
    width = width or pipe.unet.config.sample_size * factor
    if height % factor or width % factor:
        raise ConfigError(f"height and width must be multiples of {factor}")
    shape = (n, pipe.unet.config.in_channels, height // factor, width // factor)
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def generate(pipe, prompts: Union[str, Sequence[str]], *, latents: Optional[torch.Tensor] = None, num_steps: int = 25,
             guidance_scale: float = 7.5, negative_prompt: Optional[str] = None, height: Optional[int] = None,
             width: Optional[int] = None, generator: Optional[torch.Generator] = None, batch_size: int = 8,
             return_latents: bool = False):
    """Images (B, 3, H, W) in [0, 1] from prompts through the pipeline's public
    call with ``latents=`` (drawn with ``generator`` when not given). With
    ``return_latents=True``, returns ``(images, latents)``: the initial latents used."""
    check_pipeline(pipe)
    if latents is None:
        n = 1 if isinstance(prompts, str) else len(list(prompts))
        latents = initial_latents(pipe, n, height=height, width=width, generator=generator)
    prompts = _prompt_list(prompts, len(latents))
    factor = _factor(pipe)
    height, width = latents.shape[-2] * factor, latents.shape[-1] * factor
    out = []
    for i in range(0, len(latents), batch_size):
        chunk = latents[i:i + batch_size]
        result = pipe(
            prompt=prompts[i:i + batch_size], latents=chunk.to(device=_device(pipe), dtype=pipe.unet.dtype),
            num_inference_steps=num_steps, guidance_scale=guidance_scale, height=height, width=width,
            negative_prompt=[negative_prompt] * len(chunk) if negative_prompt else None,
            output_type="pt", generator=generator,
        )
        out.append(result.images.float().clamp(0, 1).cpu())
    images = torch.cat(out)
    return (images, latents) if return_latents else images
