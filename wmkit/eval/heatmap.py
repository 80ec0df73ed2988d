"""The one-figure result: which scheme survives which attack.

Rows are schemes (labelled with their embedding PSNR), columns are attacks; each cell is
the share of marked images detected at the decision level, coloured red (0) to green (1),
with a first column for unmarked images (the false-positive rate, which should stay
near 0: it is drawn in its own colour scale so a high value stands out as a warning).
Written by ``wmkit demo`` and by ``wmkit eval`` (``heatmap.png`` in the report).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

UNMARKED = "unmarked (FPR)"
FOOTNOTE = ("grey: not run (the attacked image is below the scheme's minimum size). dB: PSNR of marked against unmarked "
            "images; for generation-time schemes, against the same prompt and seed without the mark.")


def plot_heatmap(rates: Mapping[tuple[str, str], Optional[float]], methods: Sequence[str], attacks: Sequence[str], path,
                 *, alpha: float, psnr: Mapping[str, Optional[float]], counts: Mapping[str, int] | None = None,
                 false_positives: Mapping[str, Optional[float]] | None = None, title: str = "") -> Path:
    """Write the heatmap PNG to ``path`` (atomically, replacing it). ``rates[(method, attack)]``:
    detection rate of marked images (None: not run, drawn grey); ``false_positives[method]``:
    rate on unmarked images; ``counts[method]``: images per cell, shown in the row label."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from ..atomic import write_bytes

    columns = ([UNMARKED] if false_positives is not None else []) + list(attacks)
    grid = np.full((len(methods), len(columns)), np.nan)
    for i, m in enumerate(methods):
        for j, a in enumerate(columns):
            value = (false_positives or {}).get(m) if a == UNMARKED else rates.get((m, a))
            grid[i, j] = np.nan if value is None else float(value)
    fig = Figure(figsize=(max(6.0, 2.2 + 1.05 * len(columns)), max(3.4, 1.4 + 0.48 * len(methods))), dpi=120, layout="constrained")
    ax = fig.subplots()
    detect_map, fpr_map = colormaps["RdYlGn"], colormaps["Reds"]
    colours = np.ones(grid.shape + (4,))
    colours[..., :3] = 0.85  # grey where a cell was not run
    for (i, j), value in np.ndenumerate(grid):
        if np.isnan(value):
            continue
        fpr_cell = columns[j] == UNMARKED
        # false positives: pale until they pass 5 x alpha, then red
        colours[i, j] = fpr_map(min(1.0, value / max(5 * alpha, 1e-12)) * 0.8) if fpr_cell else detect_map(0.1 + 0.8 * value)
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=9, color="black")
    ax.imshow(colours, aspect="auto")
    ax.set_xticks(range(len(columns)), [c.replace(":", " ") for c in columns], rotation=35, ha="right", fontsize=9)

    def label(m: str) -> str:
        q = psnr.get(m)
        n = (counts or {}).get(m)
        return f"{m}\n" + (f"{q:.1f} dB" if q is not None else "PSNR -") + (f", n={n}" if n else "")

    ax.set_yticks(range(len(methods)), [label(m) for m in methods], fontsize=9)
    ax.set_xticks(np.arange(-0.5, len(columns), 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(methods), 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    if false_positives is not None:
        ax.axvline(0.5, color="black", linewidth=1.5)
    ax.set_title(title or f"share of marked images detected at p < {alpha:g} (first column: unmarked images flagged)", fontsize=10)
    fig.supxlabel(FOOTNOTE, fontsize=7, color="dimgrey")  # constrained layout keeps it clear of the tick labels
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return write_bytes(Path(path), buffer.getvalue(), overwrite=True)


def heatmap_from_summary(summary: dict, path, *, alpha: Optional[float] = None) -> Path:
    """The heatmap of an evaluation summary (``wmkit eval``'s summary.json): TPR at ``alpha``
    (default the headline alpha) per method and attack, the clean FPR in the first column."""
    from .records import NO_ATTACK, alpha_key

    alpha = summary["headline_alpha"] if alpha is None else alpha
    a = alpha_key(alpha)
    methods = list(summary["methods"])
    attacks = list(dict.fromkeys(r["attack"] for r in summary["results"]))
    attacks.sort(key=lambda name: name != NO_ATTACK)  # no attack first
    rates = {(r["method"], r["attack"]): r["tpr"].get(a) for r in summary["results"]}
    fpr = {r["method"]: r["fpr"].get(a) for r in summary["results"] if r["attack"] == NO_ATTACK}
    counts = {r["method"]: r["n_watermarked"] for r in summary["results"] if r["attack"] == NO_ATTACK}
    psnr = {m: info.get("embed_psnr") for m, info in summary["methods"].items()}
    return plot_heatmap(rates, methods, attacks, path, alpha=alpha, psnr=psnr, counts=counts, false_positives=fpr)


def heatmap_from_demo(record: dict, path) -> Path:
    """The heatmap of a ``wmkit demo`` run from its ``demo.json`` record."""
    ran = list(record["rows"])
    rates = {(m, a): row["detected"] for m in ran for a, row in record["rows"][m].items() if row is not None and a != "unmarked"}
    fpr = {m: (record["rows"][m].get("unmarked") or {}).get("detected") for m in ran}
    title = (f"wmkit demo{' --full' if record.get('full') else ''}: share of {record['images']} marked images "
             f"detected at p < {record['alpha']:g}")
    return plot_heatmap(rates, ran, ["none"] + list(record["attacks"]), path, alpha=record["alpha"], psnr=record["psnr"],
                        counts={m: record["images"] for m in ran}, false_positives=fpr, title=title)
