"""What schemes and attacks exist: the built-ins and the installed plug-ins.

The registries (``wmkit.registry``) are filled on first use by ``load_all``, which this module
hands them when ``wmkit`` is imported: it imports the built-in packages (their ``@register``
decorators run) and then the plug-ins' entry points. The registry itself imports none of
them, so the modules that register never import something that imports them back.
"""
from __future__ import annotations

import warnings

from .errors import ConfigError
from .registry import ATTACKS, WATERMARKERS, Registry

PLUGIN_GROUPS = {"wmkit.watermarkers": WATERMARKERS, "wmkit.attacks": ATTACKS}
_loaded_plugins: set[tuple[str, str]] = set()


def load_all() -> None:
    """The built-ins, then the plug-ins not loaded yet. Lazy, so that ``import wmkit`` stays
    cheap (no torch models, no diffusers) until a scheme or attack is asked for."""
    from . import attacks, watermarkers  # noqa: F401  (importing them runs their @register)

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
                    if not registry.holds(target):
                        registry.register(point.name)(target)
            except Exception as exc:  # a broken plug-in must not break wmkit: say which, go on
                warnings.warn(f"wmkit plug-in '{point.name}' ({point.value}, group {group}) was not loaded: {exc}",
                              stacklevel=2)
                continue
            loaded.append(point.name)
    _loaded_plugins.add(("", ""))  # loading ran, even with no plug-in installed
    return loaded


Registry.loader = load_all
