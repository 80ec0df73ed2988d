"""Summaries and reports of an evaluation's records: summary.json, summary.md and PNG plots.

Everything here reads the tidy records (``harness`` writes them) and nothing else, so a
report can be rebuilt from a results.jsonl at any time (``summarize(read_records(path))``,
``records.read_records``).

Per (method, attack), over the rows with status "ok":
- TPR at each alpha: the fraction of watermarked rows with ``p_value < alpha`` (the p-value
  a user would act on: the calibrated one where the scheme ships a calibration);
- the empirical FPR of the same test on the unwatermarked rows under the same attack, the
  binomial upper bound on it for a valid p-value, and a flag when the bound is exceeded;
- the ROC and AUC of watermarked against unwatermarked rows, scored by -log10 p;
- mean bit accuracy and mean PSNR / SSIM / MS-SSIM of the attacked marked image against
  the original.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from ..types import DEFAULT_ALPHA
from .records import NO_ATTACK, STATUS_ERROR, STATUS_SKIPPED, Record, alpha_key, read_records
from .metrics import calibration_check, rejection_rate, roc_curve

ALPHAS = (1e-2, 1e-3, 1e-4, 1e-6)
HEADLINE_ALPHA = DEFAULT_ALPHA  # the alpha of the markdown table and the plots
CONFIDENCE = 0.99  # of the binomial upper bound on the empirical FPR
MAX_CURVES_PER_AXES = 12  # more attacks than this: ROC curves go into one panel per family


# -- the summary --------------------------------------------------------------------------
@dataclass
class _Group:
    """What one (method, attack) pair needs: small arrays of numbers, never images."""

    family: str
    strength: float
    pos_p: list = field(default_factory=list)
    pos_p_analytic: list = field(default_factory=list)
    pos_score: list = field(default_factory=list)
    neg_p: list = field(default_factory=list)
    neg_p_analytic: list = field(default_factory=list)
    neg_score: list = field(default_factory=list)
    bit_accuracy: list = field(default_factory=list)
    quality: dict = field(default_factory=lambda: defaultdict(list))
    attack_time: list = field(default_factory=list)  # seconds per marked image
    skipped: int = 0  # images whose attacked copy was below the method's minimum size
    errors: int = 0  # images whose attack or detection failed


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    """Mean of the defined values; None when there are none (JSON null, '—' in tables)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _clean(value: Any) -> Any:
    """NaN and infinities become None, recursively, so summary.json is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def summarize(records: Iterable[Record], *, alphas: Sequence[float] = ALPHAS, confidence: float = CONFIDENCE, config: Optional[dict] = None) -> dict:
    """The summary dict (what summary.json holds) of an evaluation's records."""
    groups: dict[tuple[str, str], _Group] = {}
    methods: list[str] = []
    embed_quality: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    calibrated: dict[str, bool] = {}
    images, failed_images, num_records = set(), set(), 0
    for r in records:
        num_records += 1
        images.add(r.image_index)
        if r.unreadable:
            failed_images.add(r.image_index)
            continue
        if r.method not in methods:
            methods.append(r.method)
        key = (r.method, r.attack)
        g = groups.get(key) or groups.setdefault(key, _Group(family=r.attack_family, strength=r.strength))
        if r.status in (STATUS_SKIPPED, STATUS_ERROR):
            # counted once per image: the watermarked and unwatermarked rows share the fate
            if r.watermarked:
                g.skipped += r.status == STATUS_SKIPPED
                g.errors += r.status == STATUS_ERROR
            continue
        score = -r.log10_p_value  # higher = more watermarked
        if r.watermarked:
            g.pos_p.append(r.p_value)
            g.pos_p_analytic.append(r.p_value_analytic)
            g.pos_score.append(score)
            if r.bit_accuracy is not None:
                g.bit_accuracy.append(r.bit_accuracy)
            for name in ("psnr", "ssim", "ms_ssim"):
                g.quality[name].append(getattr(r, name))
            if r.time_attack_s is not None and r.attack != NO_ATTACK:
                g.attack_time.append(r.time_attack_s)
            if r.attack == NO_ATTACK:  # count each image once for the embedding quality
                for name in ("psnr", "ssim", "ms_ssim"):
                    embed_quality[r.method][name].append(getattr(r, f"embed_{name}"))
        else:
            g.neg_p.append(r.p_value)
            g.neg_p_analytic.append(r.p_value_analytic)
            g.neg_score.append(score)
        calibrated[r.method] = calibrated.get(r.method, False) or bool(r.calibrated)

    rows = [_row(method, attack, g, alphas, confidence) for (method, attack), g in groups.items()]
    warnings = [
        f"{row['method']} / {row['attack']}: empirical FPR {row['fpr'][alpha_key(a)]:.3g} at alpha={a:g} "
        f"exceeds the {confidence:.0%} binomial bound {row['fpr_bound'][alpha_key(a)]:.3g} "
        f"(n={row['n_unwatermarked']}): the p-values are too small for these images"
        for row in rows
        for a in alphas
        if row["fpr_exceeded"][alpha_key(a)]
    ]
    summary = {
        "config": config or {},
        "alphas": [float(a) for a in alphas],
        "headline_alpha": HEADLINE_ALPHA,
        "confidence": confidence,
        "counts": {"records": num_records, "images": len(images), "failed_images": len(failed_images)},
        "methods": {
            m: {
                "calibrated": calibrated.get(m, False),
                "embed_psnr": _mean(embed_quality[m]["psnr"]),
                "embed_ssim": _mean(embed_quality[m]["ssim"]),
                "embed_ms_ssim": _mean(embed_quality[m]["ms_ssim"]),
            }
            for m in methods
        },
        "results": rows,
        "potency": potency_ranking(rows),
        "calibration_warnings": warnings,
    }
    return _clean(summary)


def _row(method: str, attack: str, g: _Group, alphas: Sequence[float], confidence: float) -> dict:
    _, _, auc = roc_curve(g.pos_score, g.neg_score)
    checks = calibration_check(g.neg_p, alphas, confidence=confidence)
    checks_analytic = calibration_check(g.neg_p_analytic, alphas, confidence=confidence)
    return {
        "method": method,
        "attack": attack,
        "attack_family": g.family,
        "strength": g.strength,
        "n_watermarked": len(g.pos_p),
        "n_unwatermarked": len(g.neg_p),
        "n_skipped": g.skipped,
        "n_errors": g.errors,
        "tpr": {alpha_key(a): rejection_rate(g.pos_p, a) for a in alphas},
        "tpr_analytic": {alpha_key(a): rejection_rate(g.pos_p_analytic, a) for a in alphas},
        "auc": auc,
        "fpr": {alpha_key(c.alpha): c.fpr for c in checks},
        "fpr_bound": {alpha_key(c.alpha): c.bound for c in checks},
        "fpr_exceeded": {alpha_key(c.alpha): c.exceeded for c in checks},
        "fpr_analytic": {alpha_key(c.alpha): c.fpr for c in checks_analytic},
        "fpr_analytic_exceeded": {alpha_key(c.alpha): c.exceeded for c in checks_analytic},
        "bit_accuracy": _mean(g.bit_accuracy),
        "psnr": _mean(g.quality["psnr"]),
        "ssim": _mean(g.quality["ssim"]),
        "ms_ssim": _mean(g.quality["ms_ssim"]),
        "time_attack_s": _mean(g.attack_time),
    }


# -- potency at matched quality ------------------------------------------------------------
POTENCY_PSNR_FLOOR = 28.0  # dB: below this an attacked image counts as destroyed...
POTENCY_SSIM_FLOOR = 0.75  # ...or below this SSIM
REMOVED_TPR = 0.5  # TPR below this: the attack removes the mark for most images


def _interpolate_tpr(points: list[tuple[float, float]], psnr: float) -> Optional[float]:
    """TPR at the given PSNR, linearly interpolated between an attack family's settings
    (None when the family's PSNR range does not bracket it: no extrapolation)."""
    points = sorted(points)
    for (p0, t0), (p1, t1) in zip(points, points[1:]):
        if p0 <= psnr <= p1:
            return t0 if p1 == p0 else t0 + (t1 - t0) * (psnr - p0) / (p1 - p0)
    if len(points) == 1 and points[0][0] == psnr:
        return points[0][1]
    return None


def potency_ranking(rows: Sequence[dict], *, alpha: float = HEADLINE_ALPHA, psnr_floor: float = POTENCY_PSNR_FLOOR,
                    ssim_floor: float = POTENCY_SSIM_FLOOR) -> dict:
    """Attack families ranked per method by potency at matched image quality.

    A setting is *acceptable* when its attacked marked images keep PSNR >= ``psnr_floor`` and
    SSIM >= ``ssim_floor`` against the original. A family's potency is the lowest TPR at
    ``alpha`` among its acceptable settings (lower = more potent; ties: higher PSNR first); its
    TPR at exactly the floor PSNR is interpolated between settings where they bracket it.
    Verdicts: "removes the mark" (an acceptable setting has TPR < 0.5), "destroys the image"
    (TPR < 0.5 only at settings below the quality floor), "mark survives", or "quality
    undefined" (the attack changes the image size, so PSNR/SSIM do not apply).
    """
    a = alpha_key(alpha)
    by_method: dict[str, dict[str, list[dict]]] = {}
    for row in rows:
        if row["attack"] == NO_ATTACK or row["tpr"].get(a) is None:
            continue
        by_method.setdefault(row["method"], {}).setdefault(row["attack_family"], []).append(row)
    ranking: dict[str, list[dict]] = {}
    for method, families in by_method.items():
        entries = []
        for family, settings in families.items():
            measured = [r for r in settings if r["psnr"] is not None]
            acceptable = [r for r in measured if r["psnr"] >= psnr_floor and (r["ssim"] is None or r["ssim"] >= ssim_floor)]
            best = min(acceptable, key=lambda r: (r["tpr"][a], -r["psnr"])) if acceptable else None
            if not measured:
                verdict = "quality undefined"
            elif best is not None and best["tpr"][a] < REMOVED_TPR:
                verdict = "removes the mark"
            elif any(r["tpr"][a] < REMOVED_TPR for r in measured):
                verdict = "destroys the image"
            else:
                verdict = "mark survives"
            times = [r["time_attack_s"] for r in settings if r.get("time_attack_s") is not None]
            entries.append({
                "attack_family": family,
                "verdict": verdict,
                "best_attack": None if best is None else best["attack"],
                "best_tpr": None if best is None else best["tpr"][a],
                "best_psnr": None if best is None else best["psnr"],
                "best_ssim": None if best is None else best["ssim"],
                "tpr_at_psnr_floor": _interpolate_tpr([(r["psnr"], r["tpr"][a]) for r in measured], psnr_floor),
                "min_tpr_any_quality": min(r["tpr"][a] for r in settings),
                "time_attack_s": float(np.mean(times)) if times else None,
            })
        entries.sort(key=lambda e: (e["best_tpr"] if e["best_tpr"] is not None else math.inf,
                                    -(e["best_psnr"] or 0.0), e["attack_family"]))
        for rank, entry in enumerate(entries, 1):
            entry["rank"] = rank if entry["best_tpr"] is not None else None
        ranking[method] = entries
    return {"alpha": alpha, "psnr_floor": psnr_floor, "ssim_floor": ssim_floor, "ranking": ranking}


def roc_points(records: Iterable[Record]) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, float, int]]:
    """(fpr, tpr, auc, number of negatives) per (method, attack), for the ROC plots."""
    scores: dict[tuple[str, str], tuple[list, list]] = {}
    for r in records:
        if not r.usable:
            continue
        pos, neg = scores.setdefault((r.method, r.attack), ([], []))
        (pos if r.watermarked else neg).append(-r.log10_p_value)
    return {key: (*roc_curve(pos, neg), len(neg)) for key, (pos, neg) in scores.items()}


# -- markdown ----------------------------------------------------------------------------------
def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


# long by nature: the report's sections in the order they print
def markdown(summary: dict, *, plots: Sequence[str] = ()) -> str:
    a = alpha_key(HEADLINE_ALPHA)
    cfg, counts = summary["config"], summary["counts"]
    lines = ["# wmkit evaluation", ""]
    if cfg:
        lines.append(
            f"Methods: {', '.join(cfg.get('methods', []))}. Images: {counts['images']} "
            f"({cfg.get('images', '')}), {counts['failed_images']} unreadable. Seed: {cfg.get('seed')}. "
            f"Processes: {cfg.get('processes', 1)}."
        )
        lines.append("")
    lines += [
        "## Robustness",
        "",
        f"TPR: fraction of watermarked images with p < {HEADLINE_ALPHA:g}. AUC: watermarked vs unwatermarked "
        "images under the same attack, scored by -log10 p. PSNR: attacked marked image vs the original "
        "(— where the attack changes the size). n: watermarked images detected on (skipped: attacked "
        "image below the method's minimum size).",
        "",
        f"| method | attack | strength | n | skipped | TPR@{HEADLINE_ALPHA:g} | AUC | bit acc | PSNR dB | SSIM | attack s/img |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["results"]:
        lines.append(
            f"| {row['method']} | `{row['attack']}` | {_fmt(row['strength'], 2)} | {row['n_watermarked']} | "
            f"{row['n_skipped']} | {_fmt(row['tpr'][a])} | {_fmt(row['auc'])} | {_fmt(row['bit_accuracy'])} | "
            f"{_fmt(row['psnr'], 1)} | {_fmt(row.get('ssim'))} | {_fmt(row.get('time_attack_s'), 3)} |"
        )
    potency = summary.get("potency") or {}
    if potency.get("ranking"):
        lines += [
            "",
            "## Attack potency at matched quality",
            "",
            f"Per method, attack families ranked by the lowest TPR@{potency['alpha']:g} among their settings that keep "
            f"PSNR >= {potency['psnr_floor']:g} dB and SSIM >= {potency['ssim_floor']:g} (lower = more potent). "
            f"TPR@floor: interpolated at PSNR = {potency['psnr_floor']:g} dB where the settings bracket it. "
            "'destroys the image': the mark goes only at settings below the quality floor.",
            "",
            "| method | rank | attack family | verdict | best setting | TPR | PSNR dB | SSIM | TPR@floor | min TPR (any quality) | attack s/img |",
            "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for method, entries in potency["ranking"].items():
            for e in entries:
                best = f"`{e['best_attack']}`" if e["best_attack"] else "—"
                lines.append(
                    f"| {method} | {e['rank'] if e['rank'] is not None else '—'} | {e['attack_family']} | {e['verdict']} | {best} | "
                    f"{_fmt(e['best_tpr'])} | {_fmt(e['best_psnr'], 1)} | {_fmt(e['best_ssim'])} | {_fmt(e['tpr_at_psnr_floor'])} | "
                    f"{_fmt(e['min_tpr_any_quality'])} | {_fmt(e['time_attack_s'], 3)} |"
                )
    low, high = alpha_key(1e-2), alpha_key(1e-3)
    lines += [
        "",
        "## Calibration",
        "",
        "Empirical false-positive rate of the test p < alpha on the unwatermarked images under each "
        f"attack, and the largest rate a valid p-value gives with {summary['confidence']:.0%} probability "
        "(binomial upper bound). EXCEEDED: more false positives than sampling error explains.",
        "",
        "| method | attack | n | FPR@0.01 | bound | FPR@0.001 | bound | status |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in summary["results"]:
        flagged = row["fpr_exceeded"][low] or row["fpr_exceeded"][high]
        status = "EXCEEDED" if flagged else ("—" if row["n_unwatermarked"] == 0 else "ok")
        lines.append(
            f"| {row['method']} | `{row['attack']}` | {row['n_unwatermarked']} | {_fmt(row['fpr'][low])} | "
            f"{_fmt(row['fpr_bound'][low])} | {_fmt(row['fpr'][high])} | {_fmt(row['fpr_bound'][high])} | {status} |"
        )
    if summary["calibration_warnings"]:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in summary["calibration_warnings"]]
    embed = summary["methods"]
    if embed:
        lines += ["", "## Embedding quality", "", "| method | PSNR dB | SSIM | MS-SSIM | calibrated null |", "|---|---:|---:|---:|---|"]
        for m, q in embed.items():
            lines.append(f"| {m} | {_fmt(q['embed_psnr'], 2)} | {_fmt(q['embed_ssim'])} | {_fmt(q['embed_ms_ssim'])} | {'yes' if q['calibrated'] else 'no (fair coins)'} |")
    if summary.get("forgery"):
        from .forgery import markdown_section

        lines += ["", markdown_section(summary["forgery"]).rstrip("\n")]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


# -- plots -----------------------------------------------------------------------------------
def _figure(width: float, height: float):
    # Figure objects, not pyplot: no global state, no GUI backend, safe in any process
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_roc(method: str, rows: list[dict], curves: dict, path: Path) -> Path:
    """One figure per method: an ROC curve per attack (grouped by family when there are many)."""
    attacks = [r for r in rows if (method, r["attack"]) in curves]
    n_neg = max((curves[(method, r["attack"])][3] for r in attacks), default=1)
    floor = 0.5 / max(n_neg, 1)  # an FPR of 0 cannot sit on a log axis: drawn at half a false positive
    families = list(dict.fromkeys(r["attack_family"] for r in attacks if r["attack"] != NO_ATTACK))
    panels = [("all attacks", attacks)] if len(attacks) <= MAX_CURVES_PER_AXES else [
        (fam, [r for r in attacks if r["attack"] == NO_ATTACK or r["attack_family"] == fam]) for fam in families
    ]
    cols = 1 if len(panels) == 1 else 4
    nrows = math.ceil(len(panels) / cols)
    fig = _figure(8.5 if cols == 1 else 16, 5.5 if cols == 1 else 3.6 * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, (title, panel_rows) in zip(axes.flat, panels):
        colors = _colors(len(panel_rows))
        for color, r in zip(colors, panel_rows):
            fpr, tpr, auc, _ = curves[(method, r["attack"])]
            style = {"color": "black", "linestyle": "--"} if r["attack"] == NO_ATTACK else {"color": color}
            label = f"{r['attack']} (AUC {auc:.3f})" if math.isfinite(auc) else f"{r['attack']} (AUC —)"
            ax.plot(np.maximum(fpr, floor), tpr, linewidth=1.6, label=label, **style)
        grid = np.geomspace(floor, 1.0, 50)
        ax.plot(grid, grid, color="grey", linewidth=0.8, linestyle=":", label="chance")
        _log_fpr_axis(ax, floor)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel(f"false positive rate (log scale; 0 drawn at {floor:.2g})")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7 if cols > 1 else 8, loc="lower right")
        if cols > 1:
            ax.set_title(title, fontsize=10)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{method}: ROC of watermarked vs unwatermarked images under each attack (score -log10 p)")
    fig.savefig(path)
    return path


def _log_fpr_axis(ax, floor: float) -> None:
    """Log-scale FPR axis with plain tick labels (0.01, 0.1, 0.2, 0.5, 1) rather than 10^-2 powers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def strength_families(rows: list[dict]) -> dict[str, list[dict]]:
    """Attack families measured at two or more strengths (the `strengths` suite), by family."""
    by_family: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["attack"] != NO_ATTACK and r["strength"] is not None:
            by_family[r["attack_family"]].append(r)
    return {fam: rs for fam, rs in by_family.items() if len({r["strength"] for r in rs}) >= 2}


def plot_tpr_vs_strength(method: str, rows: list[dict], path: Path) -> Optional[Path]:
    families = strength_families(rows)
    if not families:
        return None
    a = alpha_key(HEADLINE_ALPHA)
    clean = next((r for r in rows if r["attack"] == NO_ATTACK), None)
    fig = _figure(10, 5.5)
    ax = fig.subplots()
    # many families share values (all detected, none detected): colour, marker and line style
    # all vary, so overlapping lines stay tellable apart
    colors, markers, styles = _colors(10), "osD^vP*", ["-", "--", ":"]  # 10 colours x 7 markers: no repeats
    for i, (family, fam_rows) in enumerate(families.items()):
        points = sorted((r["strength"], r["tpr"][a]) for r in fam_rows if r["tpr"][a] is not None)
        label = family if points else f"{family} (all skipped: image too small)"
        if clean is not None and clean["tpr"][a] is not None:
            points = [(0.0, clean["tpr"][a])] + points  # strength 0 is the exact identity: the clean row
        xs, ys = zip(*points) if points else ((), ())
        ax.plot(
            xs, ys, marker=markers[i % len(markers)], markersize=6, linewidth=1.6, color=colors[i % 10],
            linestyle=styles[(i // 10) % len(styles)], label=label, alpha=0.85,
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("attack strength (0 = no attack, 1 = strongest)")
    ax.set_ylabel(f"TPR at alpha = {HEADLINE_ALPHA:g}")
    ax.set_title(f"{method}: detection rate against attack strength")
    ax.legend(title="attack", fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(path)
    return path


def plot_quality_vs_robustness(summary: dict, path: Path) -> Path:
    """Left: each method's embedding PSNR against its TPR without attack (hollow) and averaged
    over the attacks (filled, bars from the worst to the best attack). Right: each
    (method, attack): PSNR of the attacked marked image against TPR; colour = attack family,
    marker = method (text labels would pile up where schemes tie)."""
    from matplotlib.lines import Line2D

    a = alpha_key(HEADLINE_ALPHA)
    methods = list(summary["methods"])
    method_colors = dict(zip(methods, _colors(len(methods))))
    markers = dict(zip(methods, "osD^vP*" * (len(methods) // 7 + 1)))
    per_attack = [r for r in summary["results"] if r["attack"] != NO_ATTACK and r["psnr"] is not None and r["tpr"][a] is not None]
    families = list(dict.fromkeys(r["attack_family"] for r in per_attack))
    family_colors = dict(zip(families, _colors(len(families))))
    fig = _figure(14, 5.8)
    left, right = fig.subplots(1, 2)
    xs_left: list[float] = []
    for m in methods:
        rows = [r for r in summary["results"] if r["method"] == m and r["tpr"][a] is not None]
        attacked = [r["tpr"][a] for r in rows if r["attack"] != NO_ATTACK]
        clean = [r["tpr"][a] for r in rows if r["attack"] == NO_ATTACK]
        x = summary["methods"][m]["embed_psnr"]
        if x is None:
            continue
        xs_left.append(x)
        if clean:
            left.scatter([x], clean, s=90, facecolors="none", edgecolors=[method_colors[m]], linewidths=1.8, marker=markers[m])
        if attacked:
            y = float(np.mean(attacked))
            left.errorbar([x], [y], yerr=[[y - min(attacked)], [max(attacked) - y]], fmt=markers[m], markersize=8, capsize=5, color=method_colors[m], label=m)
            left.annotate(m, (x, y), textcoords="offset points", xytext=(9, 5), fontsize=9)
        points = [r for r in per_attack if r["method"] == m]
        right.scatter(
            [r["psnr"] for r in points], [r["tpr"][a] for r in points], s=55, marker=markers[m],
            c=[family_colors[r["attack_family"]] for r in points], edgecolors="black", linewidths=0.5, alpha=0.85,
        )
    if xs_left:  # at least 2 dB of room, so one method is not squeezed against the frame
        mid, half = (min(xs_left) + max(xs_left)) / 2, max(1.0, (max(xs_left) - min(xs_left)) * 0.6)
        left.set_xlim(mid - half, mid + half)
    left.scatter([], [], s=90, facecolors="none", edgecolors="grey", label="no attack (hollow)")
    left.legend(title="method", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    method_handles = [Line2D([], [], linestyle="", marker=markers[m], color="grey", markersize=8, label=m) for m in methods]
    family_handles = [Line2D([], [], linestyle="", marker="s", color=family_colors[f], markersize=8, label=f) for f in families]
    if per_attack:
        right.add_artist(right.legend(handles=method_handles, title="method", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0)))
        right.legend(handles=family_handles, title="attack", fontsize=8, loc="lower left", bbox_to_anchor=(1.01, 0.0))
    left.set_xlabel("embedding PSNR, marked vs original (dB; higher = less visible)")
    left.set_ylabel(f"TPR at alpha = {HEADLINE_ALPHA:g}")
    left.set_title("Quality against robustness per method\nfilled: mean over attacks, bars: worst to best attack")
    right.set_xlabel("PSNR of the attacked marked image vs the original (dB)")
    right.set_ylabel(f"TPR at alpha = {HEADLINE_ALPHA:g}")
    right.set_title("Per attack: damage to the image against detection\n(attacks that change the image size are left out)")
    for ax in (left, right):
        ax.set_ylim(-0.04, 1.06)
        ax.grid(True, alpha=0.3)
    fig.savefig(path)
    return path


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def write_report(report_dir: str | Path, summary: dict, records_path: str | Path) -> list[Path]:
    """summary.json, the plots and summary.md (which shows them); returns every path written."""
    report_dir = Path(report_dir)
    written = []
    path = report_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    written.append(path)
    plots: list[Path] = []
    if summary["methods"]:
        from .heatmap import heatmap_from_summary

        plots.append(heatmap_from_summary(summary, report_dir / "heatmap.png"))
    curves = roc_points(read_records(records_path))
    for method in summary["methods"]:
        rows = [r for r in summary["results"] if r["method"] == method]
        plots.append(plot_roc(method, rows, curves, report_dir / f"roc_{_safe_name(method)}.png"))
        strength_plot = plot_tpr_vs_strength(method, rows, report_dir / f"tpr_vs_strength_{_safe_name(method)}.png")
        if strength_plot is not None:
            plots.append(strength_plot)
    if summary["methods"]:
        plots.append(plot_quality_vs_robustness(summary, report_dir / "quality_vs_robustness.png"))
    path = report_dir / "summary.md"
    path.write_text(markdown(summary, plots=[p.name for p in plots]))
    return written + plots + [path]
