"""wmkit: invisible watermarks for generative image models."""
from .errors import ConfigError, InputError, KeyFileError, MissingDependencyError, WeightsError, WmkitError
from .registry import create, create_attack, list_attacks, list_watermarkers, register_attack, register_watermarker
from .types import DetectionResult

__version__ = "0.1.0"
