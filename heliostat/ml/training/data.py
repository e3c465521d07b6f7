"""Simulated training and test frames for the learned spot detector.

Every sample is a full camera frame rendered by the simulator (:func:`sim.camera.render_frame`)
of the generated plant's calibration target ``cal1`` (6 m x 6 m, ArUco markers in the
corners), with its matching dark frame, rectified to a 64 x 64 target-plane crop
(:func:`heliostat.ml.rectify.rectify_target`). The label is the simulator's ground truth:
the flux centroid of the main spot's part that lands on the target
(``FrameTruth.centroid_xy_m``), the quantity the classical detector measures too.

The draw (:class:`DataSpec`) covers the hard cases of the issue: faceted and streaky
spots, a second (weaker) spot, clouds (weak spot against the ambient light), partial
saturation (exposure beyond the auto level), spots running off the target edge, and a
range of spot sizes, aspects and signal-to-ambient ratios.

Only training, tests and the benchmark import this module (it needs :mod:`sim`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from heliostat.ml.rectify import CROP_SIZE, rectify_target

CASES = ("plain", "second_spot", "cloud", "saturated", "edge")


@dataclass(frozen=True, slots=True)
class DataSpec:
    """How frames are drawn (all randomness from ``seed``).

    Attributes
    ----------
    n : int
        Number of frames.
    seed : int
        Seed of the draw (numpy SeedSequence).
    width_px, height_px : int
        Simulated camera sensor. [px]
    field_seed : int
        Seed of the generated plant (camera placement follows from it).
    sigma_m : (float, float)
        Range of the spot's 1-sigma size. [m]
    p_second, p_cloud, p_saturated, p_edge : float
        Probabilities of each hard case (independent draws). [1]
    peak_to_ambient : (float, float)
        Log-uniform range of the spot's peak irradiance over the ambient light. [1]
    """

    n: int = 2400
    seed: int = 20251126
    width_px: int = 480
    height_px: int = 384
    field_seed: int = 0
    sigma_m: tuple[float, float] = (0.15, 0.9)
    p_second: float = 0.2
    p_cloud: float = 0.2
    p_saturated: float = 0.2
    p_edge: float = 0.2
    peak_to_ambient: tuple[float, float] = (1.5, 60.0)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Scene:
    """Plant, target, camera and registration shared by all frames of a data set."""

    field: object
    target: object
    camera: object
    registration: object


def make_scene(spec: DataSpec) -> Scene:
    """The generated plant's calibration target seen by a simulated camera."""
    from heliostat.vision.target import register_corners
    from sim.camera import place_camera
    from sim.field import generate_field

    field = generate_field(10, np.random.default_rng(spec.field_seed))
    target = field.targets["cal1"]
    cam = place_camera(field, target, width_px=spec.width_px, height_px=spec.height_px)
    reg = register_corners(
        cam.project(target.corners_enu_m()),
        target.width_m,
        target.height_m,
        (spec.width_px, spec.height_px),
        k_px=cam.k_px,
        dist_coeffs=cam.dist_coeffs,
        markers=target.markers,
    )
    return Scene(field, target, cam, reg)


@dataclass(frozen=True, slots=True)
class Sample:
    """One rendered frame with its dark frame and truth."""

    image: NDArray
    dark: NDArray
    xy_m: NDArray[np.float64]
    uv_px: NDArray[np.float64]
    cases: tuple[str, ...]


def _draw_spot(g: np.random.Generator, spec: DataSpec, half: float, edge: bool, ambient: float):
    from sim.optics import spot_with_sigma

    sigma = g.uniform(*spec.sigma_m)
    if edge:
        # Centre beyond ±(half − sigma): part of the flux runs off the target.
        side = g.integers(0, 4)
        along = g.uniform(-half + 0.3, half - 0.3)
        across = half + g.uniform(-1.0, 0.6) * sigma
        c = [(across, along), (-across, along), (along, across), (along, -across)][side]
    else:
        m = max(half - 1.5 * sigma, 0.2)
        c = (g.uniform(-m, m), g.uniform(-m, m))
    ratio = math.exp(g.uniform(*np.log(spec.peak_to_ambient)))
    aspect = g.uniform(0.45, 1.0)
    power = ratio * ambient * 2 * math.pi * sigma**2 * aspect
    shape = ("round", "faceted", "streaky")[g.integers(0, 3)]
    spot = spot_with_sigma(
        np.array(c, float),
        sigma,
        power,
        aspect=aspect,
        angle_rad=g.uniform(0, math.pi),
        shape=shape,
        rng=g,
        n_components=int(g.integers(4, 10)),
    )
    return spot, shape


def render_samples(spec: DataSpec, scene: Scene | None = None, start: int = 0, stop=None):
    """Yield :class:`Sample` number ``start`` .. ``stop`` of the spec's draw.

    Sample k depends only on (``spec.seed``, k): any slice is reproducible on its own.
    """
    from sim.camera import render_frame
    from sim.optics import on_target_flux

    scene = scene or make_scene(spec)
    t = scene.target
    half = t.width_m / 2
    stop = spec.n if stop is None else stop
    seqs = np.random.SeedSequence(spec.seed).spawn(spec.n)
    for k in range(start, stop):
        g = np.random.default_rng(seqs[k])
        ambient = g.uniform(50.0, 400.0)
        cases = []
        edge = g.random() < spec.p_edge
        for _ in range(20):
            spot, shape = _draw_spot(g, spec, half, edge, ambient)
            p_on, _ = on_target_flux(spot, t)
            if p_on >= 0.4 * spot.power_w:
                break
        spots = [spot]
        cases.append(shape)
        if edge:
            cases.append("edge")
        cloud = 1.0
        if g.random() < spec.p_cloud:
            cloud = g.uniform(0.15, 0.8)
            cases.append("cloud")
        if g.random() < spec.p_second:
            s2, _ = _draw_spot(g, spec, half, False, ambient)
            spots.append(s2.scaled(g.uniform(0.1, 0.45) * spot.power_w / s2.power_w))
            cases.append("second_spot")
        cf = [cloud] * len(spots)
        img, truth = render_frame(scene.camera, t, spots, rng=g, ambient_w_m2=ambient,
                                  cloud_factor=cf)  # fmt: skip
        exposure = truth[0].exposure
        if g.random() < spec.p_saturated:
            exposure *= g.uniform(1.3, 4.0)
            img, truth = render_frame(scene.camera, t, spots, rng=g, ambient_w_m2=ambient,
                                      cloud_factor=cf, exposure=exposure)  # fmt: skip
            if truth[0].saturated_fraction > 0:
                cases.append("saturated")
        dark, _ = render_frame(scene.camera, t, [], rng=g, ambient_w_m2=ambient, exposure=exposure)
        yield Sample(img, dark, truth[0].centroid_xy_m.copy(), truth[0].centroid_px.copy(),
                     tuple(cases))  # fmt: skip


def build_arrays(spec: DataSpec, scene: Scene | None = None, start: int = 0, stop=None):
    """Crops, labels and case tags of a slice of the draw.

    Returns
    -------
    x : ndarray (N, 1, 64, 64) float32
        Normalised crops.
    y : ndarray (N, 2) float32
        True centroid in half-extent units: (x / (w/2), y / (h/2)). [1]
    xy_m : ndarray (N, 2)
        True centroid. [m]
    cases : list of tuple of str
    """
    scene = scene or make_scene(spec)
    t = scene.target
    xs, xy, cases = [], [], []
    for s in render_samples(spec, scene, start, stop):
        crop = rectify_target(s.image, scene.registration, dark=s.dark)
        xs.append(crop.data)
        xy.append(s.xy_m)
        cases.append(s.cases)
    x = np.stack(xs)[:, None].astype(np.float32) if xs else np.empty((0, 1, CROP_SIZE, CROP_SIZE))
    xy_m = np.array(xy, dtype=np.float64).reshape(-1, 2)
    y = (xy_m / np.array([t.width_m / 2, t.height_m / 2])).astype(np.float32)
    return x, y, xy_m, cases
