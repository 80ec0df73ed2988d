"""The Attack base class: an image transform whose randomness is sampled apart from applying it.

Why the split (Kornia-augmentation style): an evaluation must be able to record and
replay exactly what was done to each image, and training code wants to apply the same
random crop to a second tensor. So ``sample_params`` draws everything random into a dict
of per-image tensors (first dimension B), and ``apply`` is a pure function of the images
and that dict.

Every attack is configured by one *natural parameter* (``JPEG(quality=50)``,
``Rotate(degrees=15)``) described by a :class:`NaturalParam`, which also holds the
linear map from a *strength* in [0, 1] to that parameter (``JPEG.from_strength(0.5)``).
Strength 0 is always the exact identity, bit for bit.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

import torch

from ..errors import ConfigError, InputError

Value = Union[float, int, bool]
Params = dict[str, torch.Tensor]


def format_value(value: Value) -> str:
    """Shortest text that parses back to the same value ("50", "22.5", "true")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))  # repr is the shortest exact round-trip form


def parse_bool(text: str, what: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{what} must be true or false, got {text!r}")


def check_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{what} must be True or False, got {value!r}")


def check_strength(strength: Any, attack: str) -> float:
    if (
        not isinstance(strength, numbers.Real)
        or isinstance(strength, bool)
        or not math.isfinite(strength)
        or not 0.0 <= strength <= 1.0
    ):
        raise ConfigError(f"{attack}: strength must be a number in [0, 1], got {strength!r}")
    return float(strength)


@dataclass(frozen=True)
class NaturalParam:
    """The one human-meaningful number an attack is configured with, and how strength maps to it.

    Strength ``s`` maps linearly: ``value = at_zero + s * (at_one - at_zero)``, rounded to the
    nearest integer for int parameters and to ``s >= 0.5`` for bool ones. ``identity`` is the
    value at which the attack changes nothing. It is None for lossy codecs, which are never a
    no-op at any quality; for them strength 0 is an explicit "off" state (see
    :meth:`Attack.from_strength`) and ``at_zero`` is only the start of the linear scale.
    """

    name: str
    kind: type  # float, int or bool
    low: float
    high: float
    default: Value
    at_zero: Value
    at_one: Value
    identity: Optional[Value]
    unit: str = ""
    low_open: bool = False  # the allowed range is (low, high] instead of [low, high]

    def range_text(self) -> str:
        if self.kind is bool:
            return "true or false"
        kind = "an integer" if self.kind is int else "a number"
        left = "(" if self.low_open else "["
        return f"{kind} in {left}{format_value(self.low)}, {format_value(self.high)}]"


    def validate(self, value: Any, attack: str) -> Value:
        problem = f"{attack}: {self.name} must be {self.range_text()}, got {value!r}"
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, numbers.Integral) and value in (0, 1):
                return bool(value)
            raise ConfigError(problem)
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(problem)
        if self.kind is int:
            if float(value) != int(value):
                raise ConfigError(problem)
            value = int(value)
        else:
            value = float(value)
        above_low = value > self.low if self.low_open else value >= self.low
        if not (above_low and value <= self.high):
            raise ConfigError(problem)
        return value

    def parse(self, text: str, attack: str) -> Value:
        """Parse the text after ':' in a spec; validation happens in the constructor."""
        if self.kind is bool:
            return parse_bool(text, f"{attack}: {self.name}")
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{attack}: {self.name} must be {self.range_text()}, got {text!r}") from None

    def from_strength(self, strength: float) -> Value:
        if self.kind is bool:
            return bool(self.at_one) if strength >= 0.5 else bool(self.at_zero)
        value = float(self.at_zero) + strength * (float(self.at_one) - float(self.at_zero))
        if self.kind is int:
            return int(math.floor(value + 0.5))
        return value

    def strength_of(self, value: Value) -> float:
        """Inverse of from_strength, clipped to [0, 1] (natural values may lie beyond strength 1)."""
        span = abs(float(self.at_one) - float(self.at_zero))
        return min(1.0, abs(float(value) - float(self.at_zero)) / span)

    def invalid_example(self) -> Value:
        """A value every constructor must reject; the contract tests use it."""
        return self.high + (self.high - self.low) + 1


def check_images(images: Any, attack: str, channels: Optional[tuple[int, ...]] = None) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = f"{tuple(images.shape)} {images.dtype}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"{attack}: expected a float tensor (B, C, H, W) in [0, 1], got {got}")
    if min(images.shape) == 0:
        raise InputError(f"{attack}: got an empty tensor of shape {tuple(images.shape)}")
    if channels is not None and images.shape[1] not in channels:
        allowed = " or ".join(str(c) for c in channels)
        raise InputError(f"{attack}: needs {allowed} channels, got {images.shape[1]}")
    return images


def random_uniform(shape: tuple[int, ...], generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's own device (torch requires it), then moved."""
    source = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=source).to(device)


def random_seeds(count: int, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """Per-image int64 seeds: they let a parameter dict stand for a whole noise field."""
    source = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, 2**62, (count,), generator=generator, device=source, dtype=torch.int64).to(device)


class Attack(torch.nn.Module):
    """Base class of every attack. Subclasses set ``param`` and implement ``_apply``.

    Images are float tensors (B, C, H, W) in [0, 1]; outputs are clamped to [0, 1] and
    keep the dtype and device. Random attacks list their extra keys in ``random_keys``
    and extend ``sample_params``. A generative attack sets ``needs_pipeline = True`` and
    takes ``pipeline`` as a keyword of its constructor; ``parse_attack`` passes it along.
    """

    name: ClassVar[str] = "attack"  # set by @register_attack
    param: ClassVar[Optional[NaturalParam]] = None
    options: ClassVar[dict[str, Value]] = {}  # further constructor keywords and their defaults
    random_keys: ClassVar[tuple[str, ...]] = ()
    channels: ClassVar[Optional[tuple[int, ...]]] = None  # allowed channel counts; None: any
    needs_pipeline: ClassVar[bool] = False
    differentiable: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self._off = False  # strength-0 codecs: no natural value is a no-op, so a flag is
        self._strength: Optional[float] = None

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_strength(cls, strength: float, **options: Any) -> "Attack":
        """Build from a strength in [0, 1]; 0 is the exact identity, 1 a strong attack."""
        s = check_strength(strength, cls.name)
        try:
            if cls.param is None:
                attack = cls(**options)
            else:
                attack = cls(**{cls.param.name: cls.param.from_strength(s)}, **options)
        except TypeError as exc:
            raise ConfigError(f"bad options for attack '{cls.name}': {exc}") from None
        attack._off = s == 0.0 and cls.param is not None and cls.param.identity is None
        attack._strength = s
        return attack

    def _validated(self, value: Any) -> Value:
        if self.param is None:
            raise TypeError(f"{type(self).__name__} declares no natural parameter")
        return self.param.validate(value, self.name)

    @classmethod
    def invalid_value(cls) -> Optional[Value]:
        """A natural-parameter value the constructor rejects (None when there is no parameter)."""
        return None if cls.param is None else cls.param.invalid_example()

    # -- introspection ------------------------------------------------------------------

    @property
    def value(self) -> Optional[Value]:
        return None if self.param is None else getattr(self, self.param.name)

    @property
    def strength(self) -> float:
        if self._strength is not None:
            return self._strength
        if self.param is None or self.value is None:
            return 0.0
        return self.param.strength_of(self.value)

    def describe(self) -> str:
        """A spec that ``parse_attack`` turns back into an equal attack, e.g. 'jpeg:50'."""
        if self.param is None:
            head = self.name
        elif self._off:
            head = f"{self.name}@0"
        else:
            head = f"{self.name}:{format_value(self.value)}"
        changed = [
            f"{key}={format_value(getattr(self, key))}"
            for key, default in self.options.items()
            if getattr(self, key) != default
        ]
        return ",".join([head, *changed])

    def extra_repr(self) -> str:
        return repr(self.describe())

    # -- running --------------------------------------------------------------------------

    def param_keys(self) -> set[str]:
        keys = set(self.random_keys)
        if self.param is not None:
            keys.add(self.param.name)
            if self.param.identity is None:
                keys.add("off")
        return keys

    def sample_params(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> Params:
        """Per-image parameters; deterministic attacks repeat their fixed value B times."""
        check_images(images, self.name, self.channels)
        batch, device = images.shape[0], images.device
        params: Params = {}
        if self.param is not None:
            params[self.param.name] = torch.full((batch,), float(self.value), device=device)
            if self.param.identity is None:
                params["off"] = torch.full((batch,), self._off, dtype=torch.bool, device=device)
        return params

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """Apply the attack with given parameters: a pure function of its arguments."""
        check_images(images, self.name, self.channels)
        self._check_params(params, images.shape[0])
        keep = self._identity_mask(params, images.shape[0]).to(images.device)
        if bool(keep.all()):
            return images.clamp(0.0, 1.0)
        out = self._apply(images, params)
        if bool(keep.any()):
            # A subclass's "no-op" parameter value is rarely exact in floating point
            # (a warp by 0 degrees still resamples); the contract is bit-exact identity.
            out = torch.where(keep.view(-1, 1, 1, 1), images, out)
        return out.clamp(0.0, 1.0)

    def forward(
        self,
        images: torch.Tensor,
        *,
        generator: Optional[torch.Generator] = None,
        return_params: bool = False,
    ) -> Union[torch.Tensor, tuple[torch.Tensor, Params]]:
        params = self.sample_params(images, generator)
        out = self.apply(images, params)
        return (out, params) if return_params else out

    # -- for subclasses -------------------------------------------------------------------

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _apply")

    def _identity_mask(self, params: Params, batch: int) -> torch.Tensor:
        """Which images the parameters leave unchanged (the base class then copies them)."""
        if self.param is None:
            return torch.zeros(batch, dtype=torch.bool)
        if self.param.identity is None:
            return params["off"].bool()
        return params[self.param.name] == float(self.param.identity)

    def _check_params(self, params: Any, batch: int) -> None:
        if not isinstance(params, dict):
            raise ConfigError(f"{self.name}: params must be the dict sample_params returns, got {type(params).__name__}")
        missing = self.param_keys() - params.keys()
        if missing:
            raise ConfigError(f"{self.name}: params lack {', '.join(sorted(missing))}; pass what sample_params returns")
        for key, tensor in params.items():
            if not isinstance(tensor, torch.Tensor) or tensor.ndim == 0 or tensor.shape[0] != batch:
                raise ConfigError(f"{self.name}: params['{key}'] must be a tensor with first dimension {batch}")
