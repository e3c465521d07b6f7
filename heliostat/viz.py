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


def field_map_png(
    positions_enu_m: ArrayLike,
    before_mrad: ArrayLike,
    after_mrad: ArrayLike,
    tower_enu_m: ArrayLike = (0.0, 0.0),
) -> bytes:
    """Two panels: heliostat positions coloured by pointing error before and after.

    Parameters
    ----------
    positions_enu_m : array_like of shape (N, 2 or 3)
        Heliostat positions (east, north[, up]). [m]
    before_mrad, after_mrad : array_like of shape (N,)
        Beam pointing error per heliostat; NaN for heliostats not calibrated. [mrad]
    tower_enu_m : array_like
        Tower base (east, north). [m]
    """
    plt = _plt()
    p = np.asarray(positions_enu_m, dtype=float)
    b = np.asarray(before_mrad, dtype=float)
    a = np.asarray(after_mrad, dtype=float)
    vmax = float(np.nanmax(np.concatenate([b, a]))) if np.any(np.isfinite(b)) else 1.0
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True, sharey=True)
    for ax, vals, title in ((axes[0], b, "before calibration"), (axes[1], a, "after")):
        sc = ax.scatter(
            p[:, 0],
            p[:, 1],
            c=vals,
            cmap="viridis",
            vmin=0.0,
            vmax=vmax,
            s=28,
            edgecolors="k",
            linewidths=0.3,
        )
        ax.plot(*np.asarray(tower_enu_m, dtype=float)[:2], marker="^", color="red", ms=10)
        ax.set_title(f"pointing error {title}")
        ax.set_xlabel("east [m]")
        ax.set_aspect("equal")
    axes[0].set_ylabel("north [m]")
    fig.colorbar(sc, ax=axes, label="beam pointing error [mrad]", shrink=0.9)
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
