"""Key screening: reject messages that clean images already tend to match.

A calibrated p-value stays valid for any message, so screening is not about
false positives: it protects *power*. A message that agrees with what the
decoder outputs on clean images (e.g. all zeros for DwtDct, which decodes
~84% zeros) has a high null match count, so watermarked images need more
matching bits before the test can tell them apart. The guarantee: a screened
message's expected null match count, under the scheme's calibration, is at
most n/2 + sqrt(n)/2 (one fair-coin standard deviation above chance).
Without a calibration there is nothing to screen against, and keygen says so.
"""
from __future__ import annotations

import math

from .errors import ConfigError
from .keys import Key

_MAX_REDRAWS = 64


def screening_limit(num_bits: int) -> float:
    return num_bits / 2 + math.sqrt(num_bits) / 2


def screen_key(wm, key: Key, *, explicit_message: bool, force: bool = False) -> tuple[Key, str]:
    """Return a screened key and a report line ('' if there is nothing to say).

    A derived message that fails is redrawn (purpose 'message/1', '/2', ...)
    and stored explicitly in the key; a message the user gave is refused
    unless ``force``.
    """
    from .watermarkers.base import BitWatermarker

    if not isinstance(wm, BitWatermarker):
        return key, ""  # score schemes: their p-value does not depend on which message a key holds
    null = wm.null_model
    if null is None:
        return key, f"note: no calibration for '{wm.name}', so the key was not screened against clean-image decodes"
    limit = screening_limit(wm.num_bits)
    # the written bits are what the decoder's bias acts on (a scheme may mask a given payload)
    expected = null.expected_matches(wm.message(key))
    if expected <= limit:
        return key, ""
    if explicit_message:
        why = (
            f"clean images are expected to match {expected:.1f} of its {wm.num_bits} bits (limit {limit:.1f}): "
            f"this decoder is biased towards it, so detection would need more matching bits"
        )
        if force:
            return key, f"warning: weak message kept (--force): {why}"
        raise ConfigError(f"weak message: {why}; choose another or pass --force")
    for attempt in range(1, _MAX_REDRAWS + 1):
        candidate = key.rng(f"message/{attempt}").integers(0, 2, size=wm.num_bits).astype(int)
        if null.expected_matches(wm.message(key.with_message(candidate))) <= limit:
            return key.with_message(candidate), (
                f"note: the first derived message was weak (expected {expected:.1f} clean matches); "
                f"redrew it ({attempt} time(s)) and stored it in the key"
            )
    raise ConfigError(f"no message passed screening in {_MAX_REDRAWS} draws; the calibration of '{wm.name}' looks degenerate")
