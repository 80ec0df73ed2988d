"""Null calibration: p-values that hold for the key in use.

This package owns the null models: ``BitNullModel`` for bit-decoding schemes (below) and
``ScoreNullModel`` for score tests (Tree-Ring, SSL zero-bit; ``fit_score_null``), which one a
scheme gets (``Watermarker.null_kind``), the shipped files and their checks
(``resolve_null_model``). ``measure`` decodes clean and attacked images to fit them
(`wmkit calibrate`).

Decoders are not fair coins on unwatermarked images. Their bits are biased
(DwtDct decodes ~84% zeros) and dependent: a dark or flat image pushes many
bits the same way. The fair-coin binomial test is right only on average over
random keys; for one fixed key it can be badly wrong.

``BitNullModel`` fits the decoder's behaviour on clean images with a
one-factor latent-trait model (two-parameter logistic, as in item response
theory): image j has a latent value theta_j and bit i decodes to 1 with
probability sigmoid(a_i + s_i * theta_j). Given theta the bits are independent,
so for a message m the match count S is Poisson-binomial with per-bit match
probabilities q_i(theta) = p_i(theta) if m_i = 1 else 1 - p_i(theta). The null
of S is that distribution averaged over theta, where theta follows a smoothed
version of the fitted values: each image contributes a Gaussian with its
posterior variance plus a kernel bandwidth, which widens the tails beyond the
calibration images (conservative by design). Bias and dependence are both
captured; the fit is key-independent, so one calibration serves every key.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import stats
from ..errors import ConfigError, WeightsError
from ..paths import weights_dir

CALIBRATION_FORMAT = "wmkit-bit-null"
CALIBRATION_VERSION = 1
_HERMITE_NODES = 12


def shipped_calibration_path(method: str, config: dict) -> Path:
    suffix = "-".join(f"{k}{v}" for k, v in sorted(config.items()))
    return weights_dir() / "calibration" / f"{method}{'-' + suffix if suffix else ''}.json"


def key_calibration_path(key_path: str | os.PathLike) -> Path:
    """Where a calibration made for a key is stored: beside the key file."""
    key_path = Path(key_path)
    return key_path.with_name(key_path.stem + ".calibration.json")


def _save_checksummed(payload: dict[str, Any], path: str | os.PathLike, *, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"{path}: exists (pass --overwrite to replace it)")
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    payload = dict(payload, checksum=hashlib.sha256(canonical).hexdigest())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=1) + "\n")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the calibration ({exc.strerror})") from None
    return path


def _load_checksummed(path: str | os.PathLike, fmt: str) -> dict[str, Any]:
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such calibration file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: not a readable calibration file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise WeightsError(f"{path}: not a wmkit calibration file of this kind (expected {fmt})")
    stored = payload.pop("checksum", None)
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    if stored != hashlib.sha256(canonical).hexdigest():
        raise WeightsError(f"{path}: calibration file is corrupted (checksum mismatch)")
    return payload


@dataclass
class BitNullModel:
    method: str
    config: dict[str, Any]
    intercepts: np.ndarray  # a_i
    loadings: np.ndarray  # s_i
    theta_means: np.ndarray  # per calibration image
    theta_vars: np.ndarray  # per calibration image (posterior variance + bandwidth^2)
    info: dict[str, Any] = field(default_factory=dict)
    _cache: dict[bytes, np.ndarray] = field(default_factory=dict, repr=False)
    _nodes: Optional[tuple[np.ndarray, np.ndarray]] = field(default=None, repr=False)

    @property
    def num_bits(self) -> int:
        return int(self.intercepts.size)

    # -- the null distribution ------------------------------------------------
    def _theta_nodes(self) -> tuple[np.ndarray, np.ndarray]:
        """Quadrature nodes and weights for the smoothed mixture over theta.

        The mixture's density on an even grid a quarter of its narrowest component's standard
        deviation apart, out to 8 of them past the extreme components: the trapezoid rule on a
        Gaussian with that step is exact to far below float precision, and the null's cost is
        one Poisson-binomial per node, so a grid of a few hundred nodes replaces 12 Hermite
        nodes per calibration image (2520 images for stable_signature: 2.4 s per message, which
        keygen's screening and multi-key verification pay for every key). Hermite nodes are
        kept where they are fewer (a handful of calibration images)."""
        means, sds = self.theta_means, np.sqrt(self.theta_vars)
        step = float(sds.min()) / 4
        low, high = float((means - 8 * sds).min()), float((means + 8 * sds).max())
        count = int(np.ceil((high - low) / step)) + 1 if step > 0 else np.inf
        if count < _HERMITE_NODES * means.size:
            grid = np.linspace(low, high, int(count))
            density = (np.exp(-0.5 * ((grid[:, None] - means[None, :]) / sds[None, :]) ** 2) / sds[None, :]).sum(1)
            return grid, density / density.sum()
        z, w = np.polynomial.hermite_e.hermegauss(_HERMITE_NODES)
        w = w / w.sum()
        nodes = means[:, None] + sds[:, None] * z[None, :]
        weights = np.broadcast_to(w[None, :], nodes.shape) / len(means)
        return nodes.ravel(), weights.ravel()

    def log_null_pmf(self, message: np.ndarray) -> np.ndarray:
        """log P(S = k), k = 0..n, for unwatermarked images and this message."""
        message = np.asarray(message, dtype=np.uint8)
        if message.size != self.num_bits:
            raise ConfigError(f"message has {message.size} bits, calibration has {self.num_bits}")
        cache_key = message.tobytes()
        if cache_key not in self._cache:
            if self._nodes is None:  # the same for every message: half a message's cost on 2520 images
                self._nodes = self._theta_nodes()
            nodes, weights = self._nodes
            logits = self.intercepts[None, :] + self.loadings[None, :] * nodes[:, None]
            p_one = 1.0 / (1.0 + np.exp(-logits))
            q_match = np.where(message[None, :] == 1, p_one, 1.0 - p_one)
            log_pmfs = stats.log_poisson_binomial_pmf(q_match)  # (nodes, n + 1)
            from scipy.special import logsumexp

            self._cache[cache_key] = logsumexp(log_pmfs + np.log(weights)[:, None], axis=0)
        return self._cache[cache_key]

    def log_p_value(self, message: np.ndarray, matches) -> np.ndarray:
        return stats.log_tail_from_log_pmf(self.log_null_pmf(message), matches)

    def expected_matches(self, message: np.ndarray) -> float:
        pmf = np.exp(self.log_null_pmf(message))
        return float((np.arange(pmf.size) * pmf).sum())

    # -- persistence ------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": CALIBRATION_FORMAT,
            "version": CALIBRATION_VERSION,
            "method": self.method,
            "config": self.config,
            "intercepts": self.intercepts.round(6).tolist(),
            "loadings": self.loadings.round(6).tolist(),
            "theta_means": self.theta_means.round(6).tolist(),
            "theta_vars": self.theta_vars.round(6).tolist(),
            "info": self.info,
        }

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        return _save_checksummed(self.to_json(), path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BitNullModel":
        payload = _load_checksummed(path, CALIBRATION_FORMAT)
        return cls(
            method=payload["method"],
            config=payload["config"],
            intercepts=np.asarray(payload["intercepts"], dtype=np.float64),
            loadings=np.asarray(payload["loadings"], dtype=np.float64),
            theta_means=np.asarray(payload["theta_means"], dtype=np.float64),
            theta_vars=np.asarray(payload["theta_vars"], dtype=np.float64),
            info=payload.get("info", {}),
        )

    def check_matches(self, watermarker) -> None:
        if self.method != watermarker.name or self.config != watermarker.config():
            raise WeightsError(
                f"calibration is for {self.method} {self.config}, not {watermarker.name} {watermarker.config()}"
            )


def fit_bit_null(
    bits: np.ndarray,
    *,
    method: str,
    config: dict[str, Any],
    steps: int = 600,
    seed: int = 0,
    info: Optional[dict[str, Any]] = None,
) -> BitNullModel:
    """Fit the one-factor logistic model to clean-image decodes (N, n) by MAP.

    Priors keep the fit finite where a bit (or an image) is all zeros or ones:
    theta ~ N(0, 1), a_i ~ N(0, 3^2), s_i ~ N(0, 3^2).
    """
    import torch

    bits = np.asarray(bits, dtype=np.float64)
    if bits.ndim != 2 or bits.shape[0] < 10:
        raise ConfigError(f"calibration needs decodes of at least 10 clean images, got {bits.shape[0] if bits.ndim == 2 else 0}")
    n_images, n_bits = bits.shape
    generator = torch.Generator().manual_seed(seed)
    y = torch.tensor(bits)
    a = torch.zeros(n_bits, dtype=torch.float64, requires_grad=True)
    s = (0.1 * torch.randn(n_bits, generator=generator, dtype=torch.float64)).requires_grad_()
    theta = torch.zeros(n_images, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam([a, s, theta], lr=0.05)
    for _ in range(steps):
        optimiser.zero_grad()
        logits = a[None, :] + s[None, :] * theta[:, None]
        nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")
        loss = nll + 0.5 * (theta**2).sum() + 0.5 * ((a**2).sum() + (s**2).sum()) / 9.0
        loss.backward()
        optimiser.step()
    a_np, s_np, theta_np = (t.detach().numpy().copy() for t in (a, s, theta))
    # Laplace approximation of each image's posterior variance for theta
    p = 1.0 / (1.0 + np.exp(-(a_np[None, :] + s_np[None, :] * theta_np[:, None])))
    fisher = 1.0 + (s_np[None, :] ** 2 * p * (1 - p)).sum(axis=1)
    bandwidth = 1.06 * max(theta_np.std(), 1e-3) * n_images ** (-1 / 5)  # Silverman's rule
    theta_vars = 1.0 / fisher + bandwidth**2
    info = dict(info or {})
    info.update(
        {
            "num_images": int(n_images),
            "fitted": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "bit_one_rate": float(bits.mean()),
            "dependence": dependence_summary(bits),
        }
    )
    return BitNullModel(method, dict(config), a_np, s_np, theta_np, theta_vars, info)


def dependence_summary(bits: np.ndarray) -> dict[str, float]:
    """How far clean decodes are from fair independent coins.

    ``mean_pairwise_agreement``: fraction of bits on which two clean images
    agree (0.5 for fair coins). ``variance_ratio``: variance of the number of
    1-bits per image over the variance independent bits with the same
    per-bit rates would give (1 for independence).
    """
    bits = np.asarray(bits, dtype=np.float64)
    n_images, n_bits = bits.shape
    ones = bits.sum(axis=1)
    rates = bits.mean(axis=0)
    independent_var = float((rates * (1 - rates)).sum())
    agree = (bits @ bits.T + (1 - bits) @ (1 - bits).T) / n_bits
    off_diag = agree[~np.eye(n_images, dtype=bool)]
    return {
        "mean_pairwise_agreement": float(off_diag.mean()),
        "variance_ratio": float(ones.var() / independent_var) if independent_var > 0 else float("inf"),
    }


SCORE_NULL_FORMAT = "wmkit-score-null"


@dataclass
class ScoreNullModel:
    """Empirical recalibration of an analytic p-value (Tree-Ring and other score tests).

    On unwatermarked images, z = Phi^-1(analytic p) should be standard normal. It
    is not when the analytic model is off (DDIM inversion is not exact, latents
    are not white), so we fit z ~ N(mu, s^2) on clean images and report
    Phi((z - mu) / s). The fit is made conservative for the lower tail by
    using a lower confidence bound for mu and an upper one for s (95%), and the
    tail is extrapolated by the normal shape past the calibration sample.
    ``empirical_p`` gives the assumption-free (1 + #{null <= z}) / (1 + N) for
    comparison. One model per scheme configuration and detector model (the
    diffusion pipeline for Tree-Ring, the backbone for SSL marks).
    """

    method: str
    config: dict[str, Any]
    model: str
    mu: float
    scale: float
    null_z: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def log_p_value(self, log_p_analytic) -> np.ndarray:
        from scipy import special, stats as sps

        z = special.ndtri_exp(np.minimum(np.asarray(log_p_analytic, dtype=np.float64), 0.0))
        return sps.norm.logcdf((z - self.mu) / self.scale)

    def empirical_p(self, log_p_analytic) -> np.ndarray:
        from scipy import special

        z = special.ndtri_exp(np.minimum(np.asarray(log_p_analytic, dtype=np.float64), 0.0))
        return (1 + (self.null_z[None, :] <= np.atleast_1d(z)[:, None]).sum(1)) / (1 + self.null_z.size)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SCORE_NULL_FORMAT, "version": CALIBRATION_VERSION, "method": self.method,
            "config": self.config, "model": self.model, "mu": self.mu, "scale": self.scale,
            "null_z": self.null_z.round(6).tolist(), "info": self.info,
        }

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        return _save_checksummed(self.to_json(), path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ScoreNullModel":
        p = _load_checksummed(path, SCORE_NULL_FORMAT)
        return cls(p["method"], p["config"], p["model"], float(p["mu"]), float(p["scale"]),
                   np.asarray(p["null_z"], dtype=np.float64), p.get("info", {}))

    def check_matches(self, watermarker) -> None:
        model = watermarker.model_name
        if self.method != watermarker.name or self.config != watermarker.config() or self.model != model:
            raise WeightsError(
                f"calibration is for {self.method} {self.config} with model '{self.model}', not "
                f"{watermarker.name} {watermarker.config()} with '{model}'"
            )


def fit_score_null(log_p_analytic, *, method: str, config: dict[str, Any], model: str,
                   info: Optional[dict[str, Any]] = None) -> ScoreNullModel:
    """Fit the probit recalibration on analytic log p-values of clean images."""
    from scipy import special, stats as sps

    z = special.ndtri_exp(np.minimum(np.asarray(log_p_analytic, dtype=np.float64), 0.0))
    z = z[np.isfinite(z)]
    n = z.size
    if n < 10:
        raise ConfigError(f"calibration needs scores of at least 10 clean images, got {n}")
    mean, sd = float(z.mean()), float(z.std(ddof=1))
    mu_low = mean - sps.t.ppf(0.95, n - 1) * sd / np.sqrt(n)
    scale_high = sd * np.sqrt((n - 1) / sps.chi2.ppf(0.05, n - 1))
    # Never more liberal than the analytic test: a recalibration only corrects an analytic test
    # that is too optimistic. The calibration scores are far from independent (a few dozen
    # images x keys x attacked copies), so a fitted spread under 1 (or a centre above 0) is no
    # evidence that the analytic p-values are too cautious. Measured: on the GPU-trained tiny
    # pipeline a fit of sd 0.88 (bound 0.90) doubled the false positives at 1e-2 on new
    # generations (0.023, over the 99% bound 0.018; analytic 0.012).
    mu_used, scale_used = min(float(mu_low), 0.0), max(float(scale_high), 1.0)
    info = dict(info or {})
    info.update({"num_images": int(n), "z_mean": mean, "z_sd": sd, "mu_bound": float(mu_low), "scale_bound": float(scale_high),
                 "fitted": datetime.now(timezone.utc).replace(microsecond=0).isoformat()})
    return ScoreNullModel(method, dict(config), model, mu_used, scale_used, np.sort(z), info)


def shipped_score_calibration_path(watermarker) -> Optional[Path]:
    """Shipped score calibrations exist only for the shipped detector models (named 'tiny')."""
    if watermarker.model_name != "tiny":
        return None
    return shipped_calibration_path(watermarker.name, dict(watermarker.config(), model="tiny"))


NULL_MODELS = {"bits": BitNullModel, "score": ScoreNullModel}  # by Watermarker.null_kind


def resolve_null_model(watermarker, spec: Any):
    """Turn a calibration spec into a model: "auto" finds the shipped one, None means analytic."""
    # the scheme says which null its test has (Gaussian Shading has bits, yet its test is a score)
    kind = NULL_MODELS.get(watermarker.null_kind)
    if spec is None or spec is False or kind is None:
        return None
    if isinstance(spec, (BitNullModel, ScoreNullModel)):
        model = spec
    elif spec == "auto":
        # shipped calibrations exist only for the shipped detector models ('tiny'; '' = no model)
        if watermarker.model_name not in ("", "tiny"):
            return None
        path = (shipped_calibration_path(watermarker.name, watermarker.config()) if kind is BitNullModel
                else shipped_score_calibration_path(watermarker))
        if path is None or not path.exists():
            return None
        model = kind.load(path)
        _check_extractor(model, watermarker, path)
    else:
        model = kind.load(spec)
    model.check_matches(watermarker)
    return model


def _check_extractor(model, watermarker, path) -> None:
    """A shipped calibration of an extractor-based scheme holds only for the weights it was
    fitted on: refuse it if the shipped extractor was retrained since."""
    digest = watermarker.extractor_digest()
    fitted = (model.info or {}).get("extractor_digest")
    if digest is not None and fitted is not None and fitted != digest:
        raise WeightsError(f"{path}: fitted on another extractor ({fitted}, now {digest}); refit it with "
                           f"`python -m wmkit.train.peer_calibrations --methods {watermarker.name} --overwrite`")
