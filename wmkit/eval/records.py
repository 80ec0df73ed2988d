"""The evaluation's record: one line of results.jsonl per image, scheme, attack and watermarked flag.

The schema is written here once: ``harness`` makes ``Record`` objects, ``report`` reads
them back (``read_records``), and the JSON line is ``Record.to_json``. Fields:

    image_index, image_id, method, attack, attack_family, strength, watermarked,
    status ("ok", "skipped": attacked image below the scheme's minimum, "error"), reason,
    width, height (of the attacked image), p_value, p_value_analytic, log10_p_value,
    score, bit_accuracy, calibrated, psnr, ssim, ms_ssim (attacked image vs the original
    unmarked one), embed_psnr, embed_ssim, embed_ms_ssim (marked vs original; watermarked
    rows only), time_embed_s, time_attack_s, time_detect_s.

Quality numbers are null where undefined (the attack changed the size) or infinite (the
image is the original itself: the unmarked row without attack). An unreadable image gives
one record with status "error", null method and attack, and only the fields up to ``reason``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Optional

NO_ATTACK = "none"
TIMING_FIELDS = ("time_embed_s", "time_attack_s", "time_detect_s")
STATUS_OK, STATUS_SKIPPED, STATUS_ERROR = "ok", "skipped", "error"
DETECTION_FIELDS = ("p_value", "p_value_analytic", "log10_p_value", "score", "bit_accuracy", "calibrated")
QUALITY_FIELDS = ("psnr", "ssim", "ms_ssim", "embed_psnr", "embed_ssim", "embed_ms_ssim")


@dataclass(frozen=True)
class Record:
    image_index: int
    image_id: str
    method: Optional[str]  # None: the image could not be read
    attack: Optional[str]
    attack_family: Optional[str]
    strength: Optional[float]
    watermarked: Optional[bool]
    status: str
    reason: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    p_value: Optional[float] = None
    p_value_analytic: Optional[float] = None
    log10_p_value: Optional[float] = None
    score: Optional[float] = None
    bit_accuracy: Optional[float] = None
    calibrated: Optional[bool] = None
    psnr: Optional[float] = None
    ssim: Optional[float] = None
    ms_ssim: Optional[float] = None
    embed_psnr: Optional[float] = None
    embed_ssim: Optional[float] = None
    embed_ms_ssim: Optional[float] = None
    time_embed_s: Optional[float] = None
    time_attack_s: Optional[float] = None
    time_detect_s: Optional[float] = None

    @property
    def unreadable(self) -> bool:
        """The one record of an image that could not be read."""
        return self.method is None

    @property
    def usable(self) -> bool:
        """A detection was made: the rows rates and curves are computed from."""
        return not self.unreadable and self.status == STATUS_OK

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.unreadable:  # nothing was measured: identity, status and reason only
            return {name: out[name] for name in _UNREADABLE_FIELDS}
        return out

    def to_json(self) -> str:
        # allow_nan=False: a NaN that slipped through is a bug here, not invalid JSON in a report
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        unknown = set(data) - _FIELDS
        if unknown:
            raise ValueError(f"not an evaluation record: unknown fields {sorted(unknown)}")
        return cls(**data)

    def without_timing(self) -> dict[str, Any]:
        """The record's fields minus those that measure time (the only ones that vary run to run)."""
        return {k: v for k, v in self.to_dict().items() if k not in TIMING_FIELDS}


_FIELDS = {f.name for f in fields(Record)}
_UNREADABLE_FIELDS = [f.name for f in fields(Record)][: [f.name for f in fields(Record)].index("reason") + 1]


def read_records(path: str | Path) -> Iterator[Record]:
    """The records of a results.jsonl, in file order."""
    with open(path) as f:
        for line in f:
            if line.strip():
                yield Record.from_dict(json.loads(line))


def alpha_key(alpha: float) -> str:
    """'0.01', '0.001', '0.0001', '1e-06': the keys of per-alpha dicts in summary.json."""
    return f"{alpha:g}"
