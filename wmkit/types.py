"""Result types shared by every scheme."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

DEFAULT_ALPHA = 1e-3
# a larger image is refused from its header: about 7000 x 7000; the decoded float tensor is 600 MB
DEFAULT_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class DetectionResult:
    """The outcome of testing one image against one key.

    ``p_value`` is the probability that an unwatermarked image scores at least
    this high. Where a null calibration exists it is the calibrated p-value and
    ``p_value_analytic`` holds the textbook one (fair coins, isotropic features,
    ...); otherwise both are the same number. A decision is ``p_value < alpha``:
    there is no fixed threshold.
    """

    method: str
    p_value: float
    score: float
    p_value_analytic: float
    calibrated: bool = False
    bits: Optional[tuple[int, ...]] = None
    bit_accuracy: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def detected(self, alpha: float = DEFAULT_ALPHA) -> bool:
        if not 0.0 < alpha < 1.0:
            from .errors import ConfigError

            raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")
        return self.p_value < alpha

    def to_dict(self, alpha: float = DEFAULT_ALPHA, *, include_bits: bool = False) -> dict[str, Any]:
        """The record `wmkit verify --json` prints. The decoded bits only with ``include_bits``:
        for a scheme whose embedder is public (rivagan, hidden), printing them hands anyone who
        sees one output what they need to forge the owner's mark."""
        record = asdict(self)
        record["detected"] = self.detected(alpha)
        if self.bits is None:
            del record["bit_accuracy"]
        if self.bits is not None and include_bits:
            record["bits"] = "".join(str(b) for b in self.bits)
        else:
            del record["bits"]
        extra = record.pop("extra")
        record.update(extra)
        return record
