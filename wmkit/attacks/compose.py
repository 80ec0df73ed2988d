"""Attack specs ("crop:0.5+jpeg:80"), chaining, and the identity attack.

Grammar of a spec, one or more steps joined by '+', applied left to right::

    step   := name [":" value | "@" strength] ("," option "=" value)*
    e.g.      jpeg            the attack's default natural parameter
              jpeg:50         natural parameter (quality 50)
              rotate@0.5      strength in [0, 1] (0 = identity)
              center_crop:0.5,resize_back=false
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import torch

from ..errors import ConfigError
from ..registry import ATTACKS, register_attack
from .base import Attack, Params, Value, parse_bool

_STEP = re.compile(r"([A-Za-z0-9_\-]+)(?:\s*([:@])\s*(.*))?")


@register_attack("identity")
class Identity(Attack):
    """Changes nothing (apart from the clamp to [0, 1]): a no-op row, e.g. the clean baseline of a table."""

    def __init__(self) -> None:
        super().__init__()

    def _identity_mask(self, params: Params, batch: int) -> torch.Tensor:
        return torch.ones(batch, dtype=torch.bool)


class Sequential(Attack):
    """Several attacks applied in order. Not registered: ``parse_attack`` builds it from '+'.

    Its parameter dict holds each step's parameters under the keys "<index>.<key>".
    """

    name = "sequence"

    def __init__(self, steps: Sequence[Attack]) -> None:
        super().__init__()
        steps = list(steps)
        if not steps:
            raise ConfigError("a sequence of attacks needs at least one step")
        for step in steps:
            if not isinstance(step, Attack):
                raise ConfigError(f"sequence steps must be Attack instances, got {type(step).__name__}")
        self.steps = torch.nn.ModuleList(steps)

    # Instance-level versions of the class flags, derived from the steps.
    @property
    def differentiable(self) -> bool:  # type: ignore[override]
        return all(step.differentiable for step in self.steps)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return any(step.stochastic for step in self.steps)

    @property
    def needs_pipeline(self) -> bool:  # type: ignore[override]
        return any(step.needs_pipeline for step in self.steps)

    @property
    def strength(self) -> float:
        return max(step.strength for step in self.steps)

    def describe(self) -> str:
        return "+".join(step.describe() for step in self.steps)

    def param_keys(self) -> set[str]:
        return {f"{i}.{key}" for i, step in enumerate(self.steps) for key in step.param_keys()}

    def sample_params(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> Params:
        # Later steps sample from the output of earlier ones (sizes may change), so
        # sampling has to run the chain; forward avoids doing that twice.
        return self._run(images, generator)[1]

    def forward(
        self,
        images: torch.Tensor,
        *,
        generator: Optional[torch.Generator] = None,
        return_params: bool = False,
    ) -> Any:
        out, params = self._run(images, generator)
        return (out, params) if return_params else out

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        self._check_params(params, images.shape[0])
        for i, step in enumerate(self.steps):
            prefix = f"{i}."
            own = {key[len(prefix):]: value for key, value in params.items() if key.startswith(prefix)}
            images = step.apply(images, own)
        return images

    def _run(self, images: torch.Tensor, generator: Optional[torch.Generator]) -> tuple[torch.Tensor, Params]:
        params: Params = {}
        for i, step in enumerate(self.steps):
            images, own = step(images, generator=generator, return_params=True)
            params.update({f"{i}.{key}": value for key, value in own.items()})
        return images, params


def parse_attack(spec: str, *, pipeline: Any = None) -> Attack:
    """Build an attack from a spec string (see the module docstring for the grammar).

    ``pipeline`` is handed to attacks that need a diffusion pipeline and ignored otherwise.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"empty attack spec; available attacks: {', '.join(ATTACKS.names())}")
    steps = [_parse_step(part, spec, pipeline) for part in spec.split("+")]
    return steps[0] if len(steps) == 1 else Sequential(steps)


def _parse_step(text: str, spec: str, pipeline: Any) -> Attack:
    head, *option_texts = [piece.strip() for piece in text.split(",")]
    if not head:
        raise ConfigError(f"empty step in attack spec {spec!r}; steps are joined by '+'")
    match = _STEP.fullmatch(head)
    if not match:
        raise ConfigError(f"cannot parse attack step {text.strip()!r} in {spec!r}; expected e.g. 'jpeg:50' or 'rotate@0.5'")
    name, sep, argument = match.groups()
    cls = ATTACKS.get(name)  # ConfigError listing the available attacks
    options: dict[str, Any] = dict(_parse_option(cls, item) for item in option_texts)
    if cls.needs_pipeline:
        if pipeline is None:
            raise ConfigError(f"attack '{name}' needs a diffusion pipeline; pass pipeline=...")
        options["pipeline"] = pipeline
    if sep == "@":
        try:
            strength = float(argument)
        except ValueError:
            raise ConfigError(f"{name}: strength must be a number in [0, 1], got {argument!r}") from None
        return cls.from_strength(strength, **options)
    if sep == ":":
        if cls.param is None:
            raise ConfigError(f"attack '{name}' takes no parameter, got {head!r}")
        options[cls.param.name] = cls.param.parse(argument, name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for attack '{name}': {exc}") from None


def _parse_option(cls: type[Attack], text: str) -> tuple[str, Value]:
    key, sep, raw = (part.strip() for part in text.partition("="))
    if not sep or key not in cls.options:
        allowed = ", ".join(cls.options) or "none"
        raise ConfigError(f"{cls.name}: bad option {text!r}; options are {allowed} (written key=value)")
    default = cls.options[key]
    if isinstance(default, bool):
        return key, parse_bool(raw, f"{cls.name}: {key}")
    try:
        return key, type(default)(raw)
    except ValueError:
        raise ConfigError(f"{cls.name}: option {key} must be a {type(default).__name__}, got {raw!r}") from None
