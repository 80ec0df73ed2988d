"""Regeneration attacks: push an image through a latent diffusion model and back.

- ``regen`` (diffusion purification, Zhao et al. 2023 / WAVES "regen-diffusion"): VAE-encode,
  noise the latent to a fraction ``timestep`` of the noise schedule (``regen:0.3`` noises to
  step 0.3 * 999 of 1000), then denoise with ``steps`` deterministic DDIM steps conditioned on
  the empty prompt (no guidance), and decode. Strength s -> timestep = 0.6 s.
- ``rinse`` ("rinsing", WAVES "regen-diffusion-rinse"): ``regen`` repeated ``rounds`` times at
  a fixed ``timestep`` (option, default 0.2). Strength s -> rounds = 4 s (rounded).
- ``vae_regen`` (WAVES "regen-vae" with the pipeline's own VAE): ``rounds`` encode/decode round
  trips through the VAE (posterior mean, deterministic). Strength s -> rounds = 4 s (rounded).

Every attack here takes ``pipeline=``: a diffusers pipeline object, ``"tiny"`` (the default:
the shipped wmkit-tiny pipeline) or a local diffusers folder, loaded lazily on first use and
shared by every attack that names the same string. Randomness (the forward-diffusion noise) is
drawn from one int64 seed per image recorded by ``sample_params``, so ``apply`` replays
exactly. Each image is processed on its own, so a batch gives the same result as single
images. Sizes that are not a multiple of the VAE factor (8) are padded (replicated border) and
cropped back: the output always has the input's size, dtype and device.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import register_attack
from .base import Attack, NaturalParam, Params, random_seeds

DEFAULT_PIPELINE = "tiny"


def pad_to_multiple(images: torch.Tensor, factor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad bottom/right (replicated border) so H and W are multiples of ``factor``."""
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % factor, (-width) % factor
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
    return images, (height, width)


def vae_factor(pipe) -> int:
    from ..diffusion.inversion import _factor

    return _factor(pipe)


class PipelineAttack(Attack):
    """Base of the attacks that run a diffusion pipeline (or part of one)."""

    needs_pipeline = True
    differentiable = False
    channels = (3,)

    def __init__(self, *, pipeline: Any = DEFAULT_PIPELINE) -> None:
        super().__init__()
        # stored outside nn.Module's registries: the pipeline is shared, not owned
        object.__setattr__(self, "_pipeline_source", pipeline)

    @property
    def pipe(self):
        from ..diffusion import resolve_pipeline

        return resolve_pipeline(self._pipeline_source)

    def sample_params(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> Params:
        params = super().sample_params(images, generator)
        if "seed" in self.random_keys:
            params["seed"] = random_seeds(images.shape[0], generator, images.device)
        return params

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        pipe = self.pipe
        factor = vae_factor(pipe)
        out = images.clone()
        identity = self._identity_mask(params, images.shape[0])
        for i in range(images.shape[0]):
            if bool(identity[i]):
                continue
            own = {key: value[i] for key, value in params.items()}
            x, (height, width) = pad_to_multiple(images[i : i + 1].float(), factor)
            y = self._attack_one(pipe, x, own)
            out[i : i + 1] = y[..., :height, :width].to(device=images.device, dtype=images.dtype)
        return out

    def _attack_one(self, pipe, image: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """One image (1, 3, H, W) float32 with H, W multiples of the VAE factor -> attacked image."""
        raise NotImplementedError


def _generator(seed: torch.Tensor) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


@torch.no_grad()
def regenerate_latents(pipe, z0: torch.Tensor, *, timestep: float, steps: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Noise clean scaled latents ``z0`` to ``timestep`` (fraction of the schedule) and DDIM-denoise them.

    ``steps`` deterministic DDIM steps (at most one per schedule step) from t = round(timestep *
    (T - 1)) down to the clean latent, conditioned on the empty prompt without guidance; the
    forward noise comes from ``generator``. Works with epsilon, v and sample prediction.
    """
    from ..diffusion.inversion import _conditioning, _device, _eps

    device = _device(pipe)
    z0 = z0.to(device=device, dtype=torch.float32)
    scheduler = pipe.scheduler
    total = int(scheduler.config.num_train_timesteps)
    alphas = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    prediction = getattr(scheduler.config, "prediction_type", "epsilon")
    start = max(1, min(total - 1, int(round(timestep * (total - 1)))))
    count = max(1, min(int(steps), start))
    times = torch.linspace(start, 0, count + 1).round().long().tolist()
    noise = torch.randn(z0.shape, generator=generator, dtype=torch.float32).to(device)
    a = alphas[start]
    z = a.sqrt() * z0 + (1 - a).sqrt() * noise
    factor = vae_factor(pipe)
    embeds, added = _conditioning(pipe, [""] * len(z), 1.0, z.shape[-2] * factor, z.shape[-1] * factor)
    for t, t_next in zip(times[:-1], times[1:]):
        a_t = alphas[t]
        a_next = alphas[t_next] if t_next > 0 else torch.ones((), device=device)
        out = _eps(pipe, z, torch.tensor(t, device=device), embeds, added, 1.0)
        if prediction == "v_prediction":
            x0 = a_t.sqrt() * z - (1 - a_t).sqrt() * out
            eps = a_t.sqrt() * out + (1 - a_t).sqrt() * z
        elif prediction == "sample":
            x0 = out
            eps = (z - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        else:
            eps = out
            x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        z = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return z


def regenerate(pipe, image: torch.Tensor, *, timestep: float, steps: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Image(s) (B, 3, H, W) in [0, 1], H and W multiples of the VAE factor -> regenerated images."""
    from ..diffusion import decode_latents, encode_images

    z = regenerate_latents(pipe, encode_images(pipe, image), timestep=timestep, steps=steps, generator=generator)
    return decode_latents(pipe, z).cpu()


@register_attack("regen")
class Regeneration(PipelineAttack):
    """Diffusion purification: noise the VAE latent to a fraction of the schedule and denoise; strength s -> timestep 0.6 s."""

    param = NaturalParam(
        "timestep", float, low=0.0, high=1.0, default=0.3, at_zero=0.0, at_one=0.6, identity=0.0,
        unit="fraction of the noise schedule",
    )
    options = {"steps": 10}
    random_keys = ("seed",)
    stochastic = True

    def __init__(self, *, timestep: float = 0.3, steps: int = 10, pipeline: Any = DEFAULT_PIPELINE) -> None:
        super().__init__(pipeline=pipeline)
        self.timestep = self._validated(timestep)
        self.steps = _positive_int(steps, "regen", "steps")

    def _attack_one(self, pipe, image, params):
        return regenerate(pipe, image, timestep=float(params["timestep"]), steps=self.steps, generator=_generator(params["seed"]))


@register_attack("rinse")
class Rinse(PipelineAttack):
    """Rinsing: ``regen`` repeated ``rounds`` times at a fixed timestep (option, default 0.2); strength s -> rounds 4 s."""

    param = NaturalParam("rounds", int, low=0, high=10, default=2, at_zero=0, at_one=4, identity=0, unit="regenerations")
    options = {"timestep": 0.2, "steps": 10}
    random_keys = ("seed",)
    stochastic = True

    def __init__(self, *, rounds: int = 2, timestep: float = 0.2, steps: int = 10, pipeline: Any = DEFAULT_PIPELINE) -> None:
        super().__init__(pipeline=pipeline)
        self.rounds = self._validated(rounds)
        if not isinstance(timestep, (int, float)) or isinstance(timestep, bool) or not 0.0 < float(timestep) <= 1.0:
            raise ConfigError(f"rinse: timestep must be a number in (0, 1], got {timestep!r}")
        self.timestep = float(timestep)
        self.steps = _positive_int(steps, "rinse", "steps")

    def _attack_one(self, pipe, image, params):
        generator = _generator(params["seed"])  # one stream: each round draws its own noise
        for _ in range(int(params["rounds"])):
            image = regenerate(pipe, image, timestep=self.timestep, steps=self.steps, generator=generator)
        return image


@register_attack("vae_regen")
class VAERegeneration(PipelineAttack):
    """VAE regeneration: ``rounds`` encode/decode round trips through the pipeline's VAE; strength s -> rounds 4 s."""

    param = NaturalParam("rounds", int, low=0, high=10, default=1, at_zero=0, at_one=4, identity=0, unit="round trips")

    def __init__(self, *, rounds: int = 1, pipeline: Any = DEFAULT_PIPELINE) -> None:
        super().__init__(pipeline=pipeline)
        self.rounds = self._validated(rounds)

    def _attack_one(self, pipe, image, params):
        from ..diffusion import decode_latents, encode_images

        for _ in range(int(params["rounds"])):
            image = decode_latents(pipe, encode_images(pipe, image)).cpu()
        return image


def _positive_int(value: Any, attack: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value) or int(value) < 1:
        raise ConfigError(f"{attack}: {name} must be a positive integer, got {value!r}")
    return int(value)
