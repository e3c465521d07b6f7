"""Plots for reports. Every function takes plain arrays and returns PNG bytes.

matplotlib runs on the Agg backend (no display); nothing here reads files or knows about
the pipeline, so the report and the benchmarks can share these figures.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def colour_scale_top(values: ArrayLike, percentile: float = 98.0) -> tuple[float, int]:
    """Top of a colour scale that shows the spread of ``values``: their ``percentile``
    (NaN ignored), and how many lie above it (drawn in the top colour).

    Parameters
    ----------
    values : array_like
        What the colours show, e.g. pointing errors. [any unit]
    percentile : float
        In [0, 100]. [%]

    Returns
    -------
    top : float
        The scale's top; 1.0 when no value is finite and positive.
    above : int
        Values above it.
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile!r}")
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if not v.size or np.max(v) <= 0:
        return 1.0, 0
    top = float(np.percentile(v, percentile))
    return top, int(np.sum(v > top))


def field_map_png(
    positions_enu_m: ArrayLike,
    before_mrad: ArrayLike,
    after_mrad: ArrayLike,
    tower_enu_m: ArrayLike = (0.0, 0.0),
    corrected: ArrayLike | None = None,
    labels: Sequence[str] | None = None,
    percentile: float = 98.0,
) -> bytes:
    """Two panels: heliostat positions coloured by pointing error before and after, each
    on its own colour scale so that the spread after calibration shows.

    Each panel's scale runs from 0 to the ``percentile`` of its own values (the few
    above it take the top colour; the colour bar's arrow says so). Heliostats not
    corrected (failed fit, refused, not delivered: their "after" is their "before")
    are drawn as red crosses on the "after" panel instead of on its scale, and named
    when there are at most 30 of them and ``labels`` is given.

    Parameters
    ----------
    positions_enu_m : array_like of shape (N, 2 or 3)
        Heliostat positions (east, north[, up]). [m]
    before_mrad, after_mrad : array_like of shape (N,)
        Beam pointing error per heliostat; NaN for heliostats not verified. [mrad]
    tower_enu_m : array_like
        Tower base (east, north). [m]
    corrected : array_like of bool, shape (N,), optional
        Which heliostats run a correction; None = every one with a finite "after".
    labels : sequence of str, optional
        Heliostat ids (to name the uncorrected ones).
    percentile : float
        Top of each colour scale, as a percentile of the panel's values. [%]
    """
    plt = _plt()
    p = np.asarray(positions_enu_m, dtype=float)
    b = np.asarray(before_mrad, dtype=float)
    a = np.asarray(after_mrad, dtype=float)
    if p.ndim != 2 or p.shape[1] < 2 or b.shape != (len(p),) or a.shape != (len(p),):
        raise ValueError(
            f"positions (N, 2|3) and before/after (N,) expected, got {p.shape}, {b.shape}, "
            f"{a.shape}"
        )
    ok = np.isfinite(a) if corrected is None else np.asarray(corrected, dtype=bool) & np.isfinite(a)
    # marker area shrinks with the field so that 10,000 heliostats do not overlap [pt²]
    size = float(np.clip(5000.0 / max(len(p), 1), 2.0, 28.0))

    # panels as wide as the field is: a wide fan gets a wide, low figure [in]
    span = np.ptp(p[:, :2], axis=0) if len(p) > 1 else np.ones(2)
    aspect = float(np.clip(span[0] / max(span[1], 1e-9), 0.5, 3.0))
    fig, axes = plt.subplots(
        1, 2, figsize=(13, max(3.6, 5.6 / aspect + 1.2)), sharex=True, sharey=True
    )
    tower = np.asarray(tower_enu_m, dtype=float)[:2]
    panels = (
        (axes[0], b, np.isfinite(b), "before calibration", "viridis"),
        (axes[1], a, ok, f"after ({int(ok.sum())} corrected)", "plasma"),
    )
    for ax, vals, show, title, cmap in panels:
        vmax, n_above = colour_scale_top(vals[show], percentile)
        sc = ax.scatter(
            p[show, 0],
            p[show, 1],
            c=vals[show],
            cmap=cmap,
            vmin=0.0,
            vmax=vmax,
            s=size,
            edgecolors="k" if size > 8 else "none",
            linewidths=0.3,
        )
        ax.plot(*tower, marker="^", color="red", ms=10, ls="none")
        ax.set_title(f"pointing error {title}")
        ax.set_xlabel("east [m]")
        ax.set_aspect("equal")
        fig.colorbar(
            sc,
            ax=ax,
            shrink=0.85,
            extend="max" if n_above else "neither",
            label=f"[mrad]; scale 0–{vmax:.2g} = p{percentile:g}"
            + (f", {n_above} above" if n_above else ""),
        )
    axes[0].set_ylabel("north [m]")
    bad = ~ok
    if bad.any():
        axes[1].scatter(
            p[bad, 0],
            p[bad, 1],
            marker="x",
            color="red",
            s=max(size * 1.6, 12.0),
            linewidths=1.2,
            label=f"not corrected ({int(bad.sum())})",
        )
        if labels is not None and bad.sum() <= 30:
            for i in np.flatnonzero(bad):
                axes[1].annotate(
                    str(labels[i]), p[i, :2], fontsize=7, color="darkred",
                    xytext=(3, 3), textcoords="offset points",
                )  # fmt: skip
        axes[1].legend(loc="lower right", fontsize=8, framealpha=0.8)
    return _png(fig)


def spread_png(
    series: Mapping[str, ArrayLike], xlabel: str = "beam pointing error [mrad]"
) -> bytes:
    """Cumulative share of heliostats below each error, on a log scale: the spread before
    and after calibration on one axis although they differ by ten times.

    Parameters
    ----------
    series : mapping of str to array_like
        Per-heliostat errors by name (NaN ignored). [mrad]
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, v in series.items():
        v = np.sort(np.asarray(v, dtype=float)[np.isfinite(v)])
        v = v[v > 0]
        if not v.size:
            continue
        share = np.arange(1, v.size + 1) / v.size * 100.0
        ax.step(v, share, where="post", label=f"{name}: median {np.median(v):.2f}, "
                f"p95 {np.percentile(v, 95):.2f} (n={v.size})")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("heliostats at or below [%]")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def histogram_png(
    series: Mapping[str, ArrayLike], xlabel: str = "beam pointing error [mrad]", bins: int = 30
) -> bytes:
    """Overlaid histograms of named samples (e.g. residuals before and after)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    finite = [np.asarray(v, dtype=float)[np.isfinite(v)] for v in series.values()]
    hi = max((float(np.max(v)) for v in finite if v.size), default=1.0)
    edges = np.linspace(0.0, hi * 1.02 if hi > 0 else 1.0, bins + 1)
    for (name, _), v in zip(series.items(), finite, strict=True):
        ax.hist(
            v,
            bins=edges,
            alpha=0.55,
            label=f"{name} (median {np.median(v):.2f})" if v.size else name,
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend()
    return _png(fig)


def frame_png(
    image: np.ndarray,
    detected_uv_px: ArrayLike | None = None,
    truth_uv_px: ArrayLike | None = None,
    title: str = "",
) -> bytes:
    """A camera frame (grey, any bit depth) with the detected and true spot marked."""
    plt = _plt()
    img = np.asarray(image, dtype=float)
    if img.ndim == 3:
        img = img.mean(axis=2)
    lo, hi = np.percentile(img, [1.0, 99.9])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
    if truth_uv_px is not None and np.all(np.isfinite(truth_uv_px)):
        ax.plot(*truth_uv_px, "+", color="lime", ms=14, mew=1.5, label="truth")
    if detected_uv_px is not None and np.all(np.isfinite(detected_uv_px)):
        ax.plot(*detected_uv_px, "x", color="red", ms=10, mew=1.5, label="detected")
    if detected_uv_px is not None or truth_uv_px is not None:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return _png(fig)


def balance_png(
    hours: ArrayLike, compute_kg: Mapping[str, float], displaced_kg_per_h: float
) -> bytes:
    """Ledger balance: cumulative CO2 displaced by the gain against each grid preset's
    compute CO2 (horizontal lines); the crossings are the payback times."""
    plt = _plt()
    h = np.asarray(hours, dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(h, displaced_kg_per_h * h, color="k", lw=2, label="CO₂ displaced by the gain")
    for name, kg in compute_kg.items():
        ax.axhline(kg, ls="--", label=f"compute CO₂e, {name} grid ({kg:.3g} kg)")
    ax.set_xlabel("plant operating hours after calibration")
    ax.set_ylabel("kg CO₂e")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=8)
    return _png(fig)


def bars_png(labels: Sequence[str], values: Sequence[float], ylabel: str) -> bytes:
    """A simple bar chart (e.g. energy per stage)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.bar(list(labels), list(values), color="tab:blue")
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=20)
    return _png(fig)
