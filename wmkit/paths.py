"""Where wmkit reads its shipped weights and keeps what it makes per user: the one place for both."""
from __future__ import annotations

import os
from pathlib import Path


def weights_dir() -> Path:
    """The shipped weights folder (``$WMKIT_WEIGHTS`` overrides it)."""
    env = os.environ.get("WMKIT_WEIGHTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "weights"


def cache_dir() -> Path:
    """What wmkit makes once and reuses (Stable Signature's fine-tuned decoders):
    ``$WMKIT_CACHE``, by default ``~/.cache/wmkit``."""
    return Path(os.environ.get("WMKIT_CACHE") or Path.home() / ".cache" / "wmkit")
