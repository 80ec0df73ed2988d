"""Decorator registries for watermarkers and attacks (timm style).

Everything registered here automatically gets the generic contract tests in
tests/test_contract_*.py, which parametrize over the list_* functions.

Third-party schemes and attacks plug in through Python entry points, in the groups
``wmkit.watermarkers`` and ``wmkit.attacks`` of their package's metadata::

    [project.entry-points."wmkit.watermarkers"]
    my_mark = "my_package.marks:MyMark"      # a class: registered under the entry point's name
    [project.entry-points."wmkit.attacks"]
    my_attacks = "my_package.attacks"        # a module: importing it runs its @register_attack

They load with the built-ins, the first time a registry is asked; one that fails to load
is skipped with a warning naming it, so a broken plug-in never breaks wmkit."""
from __future__ import annotations

import warnings
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


PLUGIN_GROUPS = {"wmkit.watermarkers": WATERMARKERS, "wmkit.attacks": ATTACKS}
_loaded_plugins: set[tuple[str, str]] = set()


def _load_builtins() -> None:
    # Importing the packages runs their @register decorators; done lazily so
    # that `import wmkit` stays cheap and free of import cycles.
    from . import attacks, watermarkers  # noqa: F401

    if not _loaded_plugins:
        load_plugins()


def load_plugins() -> list[str]:
    """Load the entry points of the plug-in groups not loaded yet (called by the registries
    on first use; call it again after installing a plug-in in a running session). Returns the
    names of the entry points loaded now."""
    from importlib.metadata import entry_points

    from .attacks.base import Attack
    from .watermarkers.base import Watermarker

    loaded = []
    for group, registry in PLUGIN_GROUPS.items():
        base = Watermarker if registry is WATERMARKERS else Attack
        for point in entry_points(group=group):
            if (group, point.value) in _loaded_plugins:
                continue
            _loaded_plugins.add((group, point.value))
            try:
                target = point.load()
                if isinstance(target, type):
                    if not issubclass(target, base):
                        raise ConfigError(f"{target.__name__} is not a wmkit {base.__name__}")
                    if target not in registry._entries.values():
                        registry.register(point.name)(target)
            except Exception as exc:  # a broken plug-in must not break wmkit: say which, go on
                warnings.warn(f"wmkit plug-in '{point.name}' ({point.value}, group {group}) was not loaded: {exc}",
                              stacklevel=2)
                continue
            loaded.append(point.name)
    _loaded_plugins.add(("", ""))  # loading ran, even with no plug-in installed
    return loaded


def create(name: str, **config: Any):
    """Create a registered watermarker, e.g. ``wmkit.create("rivagan")``."""
    return WATERMARKERS.create(name, **config)


def list_watermarkers() -> list[str]:
    return WATERMARKERS.names()


def create_attack(name: str, **config: Any):
    return ATTACKS.create(name, **config)


def list_attacks() -> list[str]:
    return ATTACKS.names()
