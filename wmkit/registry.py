"""Decorator registries for watermarkers and attacks (timm style).

Everything registered here automatically gets the generic contract tests in
tests/test_contract_*.py, which parametrize over the list_* functions.

Third-party schemes and attacks plug in through Python entry points, in the groups
``wmkit.watermarkers`` and ``wmkit.attacks`` of their package's metadata::

    [project.entry-points."wmkit.watermarkers"]
    my_mark = "my_package.marks:MyMark"      # a class: registered under the entry point's name
    [project.entry-points."wmkit.attacks"]
    my_attacks = "my_package.attacks"        # a module: importing it runs its @register_attack

They load with the built-ins (``wmkit.catalog``), the first time a registry is asked; one
that fails to load is skipped with a warning naming it, so a broken plug-in never breaks
wmkit. This module imports no scheme or attack: the modules that define them import it to
register, and ``wmkit.catalog`` (imported by the package) hands the registries the function
that imports them, so no import circle runs through here."""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Generic, Optional, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    # what fills the registries on first use (the built-ins, then the plug-ins): set by wmkit.catalog
    loader: ClassVar[Optional[Callable[[], None]]] = None

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def _load(self) -> None:
        if Registry.loader is not None:
            Registry.loader()

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise ConfigError(f"{self.kind} '{name}' is registered twice")
            cls.name = name  # type: ignore[attr-defined]
            self._entries[name] = cls
            return cls

        return decorator

    def get(self, name: str) -> type[T]:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} '{name}'; available: {', '.join(sorted(self._entries))}"
            ) from None

    def holds(self, cls: type) -> bool:
        """Whether ``cls`` is registered already (under any name)."""
        return cls in self._entries.values()

    def names(self) -> list[str]:
        self._load()
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


def create(name: str, **config: Any):
    """Create a registered watermarker, e.g. ``wmkit.create("rivagan")``."""
    return WATERMARKERS.create(name, **config)


def list_watermarkers() -> list[str]:
    return WATERMARKERS.names()


def create_attack(name: str, **config: Any):
    return ATTACKS.create(name, **config)


def list_attacks() -> list[str]:
    return ATTACKS.names()
