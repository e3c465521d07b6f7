"""Training and test inputs of the real-background spot detector: real-target composites.

Every sample is :func:`sim.real_targets.composite` of a real empty Jülich target and a
real flux image (``<real>/utis``), both from one split of :func:`sim.real_targets.split_names`
(salt ``v1``: no empty target or flux image is in two splits), turned into the model's
input by :func:`heliostat.ml.real_input.real_crop` through the registration of the
256 x 256 rectified crop (corners at pixels 0 and 255, a 1 m x 1 m target). The label is
the composite's truth (the centroid of the flux on the target) in half-extent units,
target-plane axes (x right, y up). A share ``p_empty`` of the samples carries no spot
(contrast 0: the same shadow, gain and noise draws) and teaches the presence output.

Only training, tests and benchmarks import this module (it needs :mod:`sim`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from heliostat.ml.real_input import REAL_CROP_SIZE, real_crop

#: Side of the shared rectified target images, and the target width between the
#: corner pixels 0 and 255. [px]
IMAGE_PX = 256
WIDTH_PX = 255.0


@dataclass(frozen=True, slots=True)
class RealDataSpec:
    """How a set of composites is drawn (all randomness from ``seed``).

    Attributes
    ----------
    split : str
        ``train``, ``val`` or ``test`` (empty targets and flux images of that split).
    n : int
        Number of samples.
    seed : int
        Seed of the draw.
    salt : str
        Salt of the hash split (:func:`sim.real_targets.split_names`).
    p_empty : float
        Share of samples with no spot. [1]
    """

    split: str = "train"
    n: int = 4000
    seed: int = 20261202
    salt: str = "v1"
    p_empty: float = 0.1

    def as_dict(self) -> dict:
        return asdict(self)


def registration_256():
    """The registration of a 256 x 256 rectified crop: corners at pixels 0 and 255, 1 m."""
    from heliostat.vision import register_corners

    return register_corners(
        [[0, 0], [255, 0], [255, 255], [0, 255]], 1.0, 1.0, (IMAGE_PX, IMAGE_PX)
    )


def split_files(real_dir: str | Path, split: str, salt: str = "v1") -> tuple[list, list]:
    """The empty-target and flux image paths of one split."""
    from sim import real_targets as rt

    empties = rt.list_images(real_dir, "empty")
    fluxes = rt.list_images(real_dir, "flux")
    se = set(rt.split_names([p.name for p in empties], salt=salt)[split])
    sf = set(rt.split_names([p.name for p in fluxes], salt=salt)[split])
    return [p for p in empties if p.name in se], [p for p in fluxes if p.name in sf]


def draw_composites(
    real_dir: str | Path, spec: RealDataSpec, start: int = 0, stop: int | None = None
):
    """Yield ``(frame, truth or None, empty name, flux name)`` for samples start..stop.

    Sample ``i`` is drawn from its own generator (``[seed, i]``), so any slice is the
    same as in the whole set.
    """
    from sim import real_targets as rt

    empties, fluxes = split_files(real_dir, spec.split, spec.salt)
    no_spot = replace(rt.CompositeRanges(), contrast=(0.0, 0.0))
    cache: dict = {}

    def load(p):
        if p not in cache:
            if len(cache) > 512:
                cache.clear()
            cache[p] = rt.load_gray(p)
        return cache[p]

    for i in range(start, spec.n if stop is None else min(stop, spec.n)):
        g = np.random.default_rng([spec.seed, i])
        pe = empties[int(g.integers(len(empties)))]
        pf = fluxes[int(g.integers(len(fluxes)))]
        empty = g.random() < spec.p_empty
        frame, t = rt.composite(load(pe), load(pf), g, no_spot if empty else rt.CompositeRanges())
        yield frame, (None if empty else t), pe.name, pf.name


def label_of(truth, registration) -> NDArray[np.float64]:
    """The truth centroid in half-extent units (x / (w/2), y / (h/2)); NaN without one."""
    if truth is None or not math.isfinite(truth.u_px):
        return np.array([math.nan, math.nan])
    xy = registration.pixel_to_plane([[truth.u_px, truth.v_px]])[0]
    return np.array([xy[0] / (registration.width_m / 2), xy[1] / (registration.height_m / 2)])


def build_arrays(
    real_dir: str | Path, spec: RealDataSpec, start: int = 0, stop: int | None = None
) -> tuple[NDArray[np.float32], NDArray[np.float32], list]:
    """Inputs ``x`` (N, 1, 64, 64), labels ``y`` (N, 2; NaN for no spot) and truths."""
    reg = registration_256()
    xs, ys, ts = [], [], []
    for frame, t, _, _ in draw_composites(real_dir, spec, start, stop):
        crop, _ = real_crop(frame, reg, n=REAL_CROP_SIZE)
        xs.append(crop[None])
        ys.append(label_of(t, reg))
        ts.append(t)
    return np.asarray(xs, np.float32), np.asarray(ys, np.float32), ts


def _worker(args):
    real_dir, spec_d, a, b = args
    x, y, _ = build_arrays(real_dir, RealDataSpec(**spec_d), a, b)
    return x, y


def build_arrays_parallel(
    real_dir: str | Path, spec: RealDataSpec, processes: int = 2
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """:func:`build_arrays` for the whole spec in ``processes`` worker processes (same
    result: each sample has its own seed)."""
    if processes <= 1:
        x, y, _ = build_arrays(real_dir, spec)
        return x, y
    from multiprocessing import get_context

    step = math.ceil(spec.n / (4 * processes))
    jobs = [
        (str(real_dir), spec.as_dict(), a, min(a + step, spec.n)) for a in range(0, spec.n, step)
    ]
    with get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_worker, jobs)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
