"""Decorator registries for watermarkers and attacks (timm style).

Everything registered here automatically gets the generic contract tests in
tests/test_contract_*.py, which parametrize over the list_* functions."""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise ConfigError(f"{self.kind} '{name}' is registered twice")
            cls.name = name  # type: ignore[attr-defined]
            self._entries[name] = cls
            return cls

        return decorator

    def get(self, name: str) -> type[T]:
        _load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} '{name}'; available: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        _load_builtins()
        return sorted(self._entries)

    def create(self, name: str, **config: Any) -> T:
        cls = self.get(name)
        try:
            return cls(**config)
        except TypeError as exc:  # unknown keyword: say which options exist
            raise ConfigError(f"bad options for {self.kind} '{name}': {exc}") from None


WATERMARKERS: Registry = Registry("watermarker")
ATTACKS: Registry = Registry("attack")

register_watermarker = WATERMARKERS.register
register_attack = ATTACKS.register


def _load_builtins() -> None:
    # Importing the packages runs their @register decorators; done lazily so
    # that `import wmkit` stays cheap and free of import cycles.
    from . import attacks, watermarkers  # noqa: F401


def create(name: str, **config: Any):
    """Create a registered watermarker, e.g. ``wmkit.create("rivagan")``."""
    return WATERMARKERS.create(name, **config)


def list_watermarkers() -> list[str]:
    return WATERMARKERS.names()


def create_attack(name: str, **config: Any):
    return ATTACKS.create(name, **config)


def list_attacks() -> list[str]:
    return ATTACKS.names()
