"""ARTIST's kinematic reconstruction on a given split, for ``heliostat bench paint``.

Runs in **another** interpreter (a venv holding ``artist-csp``, which pulls in torch and
paint-csp); it imports nothing from ``heliostat``. Reads one JSON document on stdin::

    {"jobs": [{"heliostat": "AA39", "properties": ".../AA39-heliostat-properties.json",
               "tower": ".../WRI1030197-tower-measurements.json", "spot": "helios",
               "train": [record files], "validation": [...], "test": [...],
               "epochs": 300}]}

and prints one JSON line ``{"results": [...]}`` with, per heliostat, the beam-angle error
of each test and training record after the reconstruction (and before it), in mrad, the
wall time of the reconstruction, and the parameters ARTIST fitted.

What ARTIST does (artist-csp 2.0.0, its own code path, as its kinematics tutorial): a
scenario HDF5 from the PAINT tower and heliostat-properties files (ideal surface), then
``KinematicsReconstructor`` with the *alignment* method and ``AngleLoss`` (Adam on the
four rotation deviations of the rigid-body kinematics: first joint tilt N and U, second
joint tilt E and N). The reconstructor holds back the last samples of each heliostat as
its own test set; it is given the training records followed by the validation records
and its test fraction is set so that exactly the validation records are held back: it
fits on the training records only, as ours does.

The error measured here is ours: the angle between the reflected beam (the incident ray
mirrored at the normal ARTIST's kinematics gives for the motor positions) and the ray
from the mirror centre (the orientation's origin: position + joint and concentrator
translations) to the measured focal spot. [mrad]
"""

from __future__ import annotations

import functools
import json
import logging
import math
import pathlib
import sys
import tempfile
import time

# This file's folder (heliostat/bench) holds a ``paint.py`` that would shadow paint-csp's
# ``paint`` package, which ARTIST imports: take the folder off the path.
_HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != _HERE]


def _flux_paths(records: list[str], tmp: pathlib.Path) -> list[pathlib.Path]:
    """The record's ``<id>-flux.png`` beside it, else a blank stand-in (the alignment
    method does not use the flux; ARTIST's parser loads one per record)."""
    from PIL import Image

    blank = tmp / "blank-flux.png"
    if not blank.exists():
        Image.new("L", (256, 256)).save(blank)
    out = []
    for r in records:
        p = pathlib.Path(r)
        flux = p.with_name(p.name.split("-", 1)[0] + "-flux.png")
        out.append(flux if flux.exists() else blank)
    return out


def _errors_mrad(group, parser, mapping, scenario, device) -> list[float]:
    import torch

    (_, spots, rays, motors, mask, _) = parser.parse_data_for_reconstruction(
        heliostat_data_mapping=mapping,
        heliostat_group=group,
        scenario=scenario,
        device=device,
    )
    if int(mask.sum()) == 0:
        return []
    with torch.no_grad():
        group.activate_heliostats(active_heliostats_mask=mask, device=device)
        orient = group.kinematics.motor_positions_to_orientations(
            motor_positions=motors, device=device
        )
        n = torch.nn.functional.normalize(
            (orient @ torch.tensor([0.0, 0.0, 1.0, 0.0]))[:, :3], dim=1
        )
        centre = (orient @ torch.tensor([0.0, 0.0, 0.0, 1.0]))[:, :3]
        d = torch.nn.functional.normalize(rays[:, :3].to(n.dtype), dim=1)
        refl = d - 2.0 * (d * n).sum(dim=1, keepdim=True) * n
        meas = torch.nn.functional.normalize(spots[:, :3].to(n.dtype) - centre, dim=1)
        cos = (refl * meas).sum(dim=1).clamp(-1.0, 1.0)
        ang = torch.atan2(torch.linalg.norm(torch.cross(refl, meas, dim=1), dim=1), cos)
    return [float(a) * 1e3 for a in ang.cpu()]


def run_job(job: dict, tmp: pathlib.Path) -> dict:
    import h5py
    import torch
    from artist.io import PaintCalibrationDataParser, paint_scenario_parser
    from artist.optim import KinematicsReconstructor, training
    from artist.optim.loss import AngleLoss
    from artist.scenario import Scenario
    from artist.scenario.h5_scenario_generator import H5ScenarioGenerator
    from artist.util import constants
    from artist.util.config import LightSourceConfig, LightSourceListConfig
    from artist.util.env import setup_distributed_environment

    device = torch.device("cpu")
    hid = job["heliostat"]
    tower, planar, cylindrical = paint_scenario_parser.extract_paint_tower_measurements(
        tower_measurements_path=pathlib.Path(job["tower"]), device=device
    )
    heliostats, prototype = paint_scenario_parser.extract_paint_heliostats_ideal_surface(
        paths=[(hid, pathlib.Path(job["properties"]))],
        power_plant_position=tower.power_plant_position,
        device=device,
    )
    sun = LightSourceConfig(
        light_source_key="sun_1",
        light_source_type=constants.sun_key,
        number_of_rays=10,
        distribution_type=constants.light_source_distribution_is_normal,
        mean=0.0,
        covariance=4.3681e-06,
    )
    path = tmp / f"{hid}-scenario.h5"
    H5ScenarioGenerator(
        file_path=path,
        power_plant_config=tower,
        target_area_list_planar_config=planar,
        target_area_list_cylindrical_config=cylindrical,
        light_source_list_config=LightSourceListConfig(light_source_list=[sun]),
        heliostat_list_config=heliostats,
        prototype_config=prototype,
    ).generate_scenario()
    method = "HeliOS" if job.get("spot", "helios").lower() == "helios" else "UTIS"
    parser = PaintCalibrationDataParser(centroid_extraction_method=method)
    train, val, test = job["train"], job["validation"], job["test"]

    def mapping(records: list[str]) -> list:
        return [(hid, [pathlib.Path(r) for r in records], _flux_paths(records, tmp))]

    n_fit = len(train) + len(val)
    # ARTIST holds back int(n * fraction) samples (at least 1) from the end: exactly the
    # validation records.
    fraction = (len(val) + 0.5) / n_fit
    original_split = training.train_test_split
    training.train_test_split = functools.partial(original_split, test_fraction=fraction)
    optimizer = {
        constants.initial_learning_rate_rotation_deviation: 3e-4,
        constants.tolerance: 0.0,
        constants.max_epoch: int(job.get("epochs", 300)),
        constants.batch_size: 50,
        constants.log_step: 0,
        constants.early_stopping_delta: 1e-8,
        constants.early_stopping_patience: 1000,
        constants.early_stopping_window: 2000,
    }
    scheduler = {
        constants.scheduler_type: constants.reduce_on_plateau,
        constants.gamma: 0.9,
        constants.lr_min: 1e-6,
        constants.lr_max: 1e-3,
        constants.step_size_up: 500,
        constants.reduce_factor: 0.0001,
        constants.patience: 50,
        constants.threshold: 1e-3,
        constants.cooldown: 10,
    }
    try:
        with setup_distributed_environment(number_of_heliostat_groups=1, device=device) as ddp:
            with h5py.File(path, "r") as f:
                scenario = Scenario.load_scenario_from_hdf5(scenario_file=f, device=device)
            group = scenario.heliostat_field.heliostat_groups[0]
            before_test = _errors_mrad(group, parser, mapping(test), scenario, device)
            t0 = time.perf_counter()
            rec = KinematicsReconstructor(
                ddp_setup=ddp,
                scenario=scenario,
                data={
                    constants.data_parser: parser,
                    constants.heliostat_data_mapping: mapping(train + val),
                },
                optimization_configuration={
                    constants.optimization: optimizer,
                    constants.scheduler: scheduler,
                },
                reconstruction_method=constants.kinematics_reconstruction_alignment,
            )
            rec.reconstruct_kinematics(loss_definition=AngleLoss(), device=device)
            dt = time.perf_counter() - t0
            return {
                "heliostat": hid,
                "parameters": [
                    "first_joint_tilt_n",
                    "first_joint_tilt_u",
                    "second_joint_tilt_e",
                    "second_joint_tilt_n",
                ],
                "rotation_deviations_rad": [
                    float(x) for x in group.kinematics.rotation_deviation_parameters.reshape(-1)
                ],
                "uncalibrated_test_errors_mrad": before_test,
                "test_errors_mrad": _errors_mrad(group, parser, mapping(test), scenario, device),
                "train_errors_mrad": _errors_mrad(group, parser, mapping(train), scenario, device),
                "time_s": dt,
                "note": f"ARTIST alignment, AngleLoss, {optimizer[constants.max_epoch]} epochs max",
            }
    finally:
        training.train_test_split = original_split


def main() -> int:
    logging.disable(logging.INFO)
    jobs = json.load(sys.stdin)["jobs"]
    results = []
    with tempfile.TemporaryDirectory() as d:
        for job in jobs:
            try:
                results.append(run_job(job, pathlib.Path(d)))
            except Exception as exc:  # noqa: BLE001 - reported per heliostat
                err = f"{type(exc).__name__}: {exc}"
                results.append(
                    {"heliostat": job.get("heliostat"), "error": err, "time_s": math.nan}
                )
    print(json.dumps({"results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
