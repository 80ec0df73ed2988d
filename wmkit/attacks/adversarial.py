"""Adversarial embedding attack (WAVES "adv-emb"): PGD in pixel space under an L-infinity budget
that pushes a surrogate encoder's embedding of the image away from the original's.

``adv_embed:8`` allows every pixel to move by at most 8/255; strength s -> eps = 16 s (/255).
PGD (Madry et al.): a random start uniform in the eps-ball (from one int64 seed per image,
recorded by ``sample_params``), then ``steps`` signed-gradient ascent steps of size
``step_size``/255 (0, the default: 2.5 eps / steps) on ``||E(x_adv) - E(x)||^2``, each followed
by projection onto the ball and onto [0, 1]. The surrogate ``E`` is the pipeline's VAE encoder
(the posterior mean; the tiny pipeline by default), or any differentiable ``encoder=`` callable
mapping images (B, 3, H, W) in [0, 1] to a tensor (then no pipeline is loaded). Gradients are
taken with respect to the perturbation only; the encoder's weights are never touched.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ..errors import ConfigError
from ..registry import register_attack
from .base import NaturalParam, Params
from .regeneration import DEFAULT_PIPELINE, PipelineAttack, _generator, _positive_int, pad_to_multiple, vae_factor


def vae_embedding(pipe) -> Callable[[torch.Tensor], torch.Tensor]:
    """The pipeline's VAE encoder as an embedding: images in [0, 1] -> posterior-mean latents."""
    vae = pipe.vae
    factor = vae_factor(pipe)

    def encode(images: torch.Tensor) -> torch.Tensor:
        x, _ = pad_to_multiple(images, factor)
        return vae.encode((x * 2 - 1).to(device=vae.device, dtype=vae.dtype)).latent_dist.mean.float()

    return encode


def pgd_embedding(
    images: torch.Tensor, encoder: Callable[[torch.Tensor], torch.Tensor], *, eps: float, steps: int = 10,
    step_size: Optional[float] = None, generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """PGD away from ``encoder(images)`` within ``||x_adv - images||_inf <= eps`` (eps on the [0, 1] scale)."""
    x = images.detach().float()
    alpha = 2.5 * eps / steps if not step_size else float(step_size)
    with torch.enable_grad():
        with torch.no_grad():
            target = encoder(x).detach()
        noise = torch.rand(x.shape, generator=generator, dtype=torch.float32).to(x.device)
        delta = ((noise * 2 - 1) * eps)
        delta = (x + delta).clamp(0, 1) - x
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = (encoder(x + delta) - target).pow(2).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta.detach()).clamp(0, 1)


@register_attack("adv_embed")
class AdversarialEmbedding(PipelineAttack):
    """PGD under an L-inf budget pushing a surrogate encoder's embedding away; strength s -> eps 16 s /255."""

    param = NaturalParam("eps", float, low=0.0, high=255.0, default=8.0, at_zero=0.0, at_one=16.0, identity=0.0, unit="/255")
    options = {"steps": 10, "step_size": 0.0}
    random_keys = ("seed",)
    stochastic = True

    def __init__(self, *, eps: float = 8.0, steps: int = 10, step_size: float = 0.0,
                 encoder: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, pipeline: Any = DEFAULT_PIPELINE) -> None:
        super().__init__(pipeline=pipeline)
        self.eps = self._validated(eps)
        self.steps = _positive_int(steps, "adv_embed", "steps")
        if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not 0.0 <= float(step_size) <= 255.0:
            raise ConfigError(f"adv_embed: step_size must be a number in [0, 255] (/255; 0: 2.5 eps / steps), got {step_size!r}")
        self.step_size = float(step_size)
        if encoder is not None and not callable(encoder):
            raise ConfigError(f"adv_embed: encoder must be callable (images -> embedding), got {type(encoder).__name__}")
        object.__setattr__(self, "_encoder", encoder)

    def encoder(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return self._encoder if self._encoder is not None else vae_embedding(self.pipe)

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        encoder = self.encoder()
        out = images.clone()
        identity = self._identity_mask(params, images.shape[0])
        for i in range(images.shape[0]):
            if bool(identity[i]):
                continue
            eps = float(params["eps"][i]) / 255.0
            adv = pgd_embedding(
                images[i : i + 1], encoder, eps=eps, steps=self.steps,
                step_size=self.step_size / 255.0 if self.step_size else None, generator=_generator(params["seed"][i]),
            )
            # the perturbation is projected again in the input's dtype: the budget holds exactly there too
            delta = (adv.to(images.dtype) - images[i : i + 1]).clamp(-eps, eps)
            out[i : i + 1] = (images[i : i + 1] + delta).clamp(0, 1)
        return out
