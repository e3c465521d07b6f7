"""The parameter-selection rule (``calibrate_heliostat``) on the synthetic AA39 records
(truth known).

Run from the repository root:  .venv/bin/python tests/data/paint/selection_effect.py

For n = 4, 6, 8, 12 records (three random subsets each, seeded), prints one JSON line per
subset: the size of the chosen set, its nested leave-one-out error, and its true pointing
error on the records it never saw; and the same for the default 8-parameter set (its own
refit leave-one-out, or why it failed, and whether it hit a bound). The truth lies inside
our model (simulated heliostat, Gaussian spot noise 0.2 mrad): a best case.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from heliostat.calibration import (  # noqa: E402
    calibrate_heliostat,
    fit_heliostat,
    pointing_residuals,
    with_cross_validation,
)
from heliostat.calibration.paint import load_paint_dir  # noqa: E402


def _rms(v: np.ndarray) -> float:
    return float(math.sqrt(np.mean(np.square(v))))


def main() -> None:
    camp = load_paint_dir(Path(__file__).resolve().parent / "AA39")
    kin = camp.field.heliostats["AA39"].kinematics
    obs = camp.observations
    for n in (4, 6, 8, 12):
        for seed in range(3):
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(len(obs), n, replace=False))
            unseen = obs.subset(np.setdiff1d(np.arange(len(obs)), idx))
            train = obs.subset(idx)
            c = calibrate_heliostat(kin, train)
            row = {
                "n_records": n,
                "seed": seed,
                "chosen_n_parameters": len(c.names),
                "chosen_nested_loo_mrad": round(c.nested_rms_mrad, 3),
                "chosen_unseen_mrad": round(_rms(pointing_residuals(kin, unseen, c.fit.errors)), 3),
            }
            d = fit_heliostat(kin, train)
            if d.success:
                d = with_cross_validation(kin, train, d, "refit", None)
                row["default_loo_mrad"] = round(d.loo_rms_mrad, 3)
                row["default_unseen_mrad"] = round(
                    _rms(pointing_residuals(kin, unseen, d.errors)), 3
                )
                row["default_at_bound"] = any("bound" in w for w in d.warnings)
            else:
                row["default_failed"] = d.reason
            print(json.dumps(row))


if __name__ == "__main__":
    main()
