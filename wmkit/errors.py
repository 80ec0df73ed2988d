"""The small error hierarchy. Every error a user can cause is a WmkitError with
a message that says what to do; the CLI prints it on one line, never a traceback."""


class WmkitError(Exception):
    """Base class of every error wmkit raises on purpose."""


class ConfigError(WmkitError, ValueError):
    """A bad option, parameter or combination of them."""


class InputError(WmkitError, ValueError):
    """A bad input file or image (unreadable, too small, too large, ...)."""


class KeyFileError(InputError):
    """A key file that is missing, corrupted, or made for another method."""


def naming(path, message: str) -> str:
    """The message, prefixed with the file's path unless it names it already."""
    return message if path is None or str(path) in message else f"{path}: {message}"


class WeightsError(WmkitError):
    """Weights or a calibration file that are missing or do not match."""


class MissingDependencyError(WmkitError, ImportError):
    """An optional package a feature needs is not installed."""


def require(module: str, feature: str, package: str | None = None):
    """Import an optional dependency or raise MissingDependencyError naming the fix."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{feature} needs the '{package or module}' package: pip install {package or module}"
        ) from exc
