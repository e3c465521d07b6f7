"""Per-heliostat triage: status, flags, reason and next step from fit results, sun
positions, delivery states and verification errors (heliostat.triage)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from heliostat.calibration.fit import FitResult, resolve_names
from heliostat.kinematics import KinematicErrors
from heliostat.kinematics.drives import drive
from heliostat.triage import (
    Delivery,
    heliostat_records,
    missing_sectors,
    next_steps,
    status_counts,
    sun_sectors,
)


def _sun(az_deg: float, el_deg: float) -> np.ndarray:
    """Unit vector toward the sun, ENU, azimuth clockwise from north."""
    az, el = np.radians(az_deg), np.radians(el_deg)
    return np.array([np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)])


def test_sun_sectors_by_compass_and_height():
    # the four compass directions and both sides of the 30° split
    got = sun_sectors([_sun(90, 10), _sun(270, 45), _sun(180, 60), _sun(0, 20), _sun(135, 31)])
    assert got == [
        "morning, below 30°",
        "afternoon, above 30°",
        "midday, above 30°",
        "midday, below 30°",  # due north (southern-hemisphere noon) is midday too
        "morning, above 30°",  # azimuth 135°: sine 0.71 > 0.5
    ]
    assert missing_sectors(got[:2], reachable=got) == [
        "morning, above 30°",
        "midday, below 30°",
        "midday, above 30°",
    ]
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        sun_sectors(np.zeros((3, 2)))


def _fit(hid: str, n: int, ok: bool = True, reason: str = "", std=None, **values) -> FitResult:
    names = resolve_names("azel")
    return FitResult(
        hid, "azel", names, KinematicErrors.from_dict("azel", values), std or {}, ok, reason,
        n_points=n, condition=50.0 if ok else math.nan, loo_rms_mrad=0.5 if ok else math.nan,
    )  # fmt: skip


def _records(fits, after, delivery, sun=None):
    ids = list(after)
    # morning and afternoon low sun only: midday and high sun are missing
    seen = np.array([_sun(90, 15), _sun(270, 15)] * 3)
    reach = np.array([_sun(a, e) for a in (90, 180, 270) for e in (15, 50)])
    sun = sun or {h: seen for h in ids}
    sun["reference"] = reach  # a heliostat seen everywhere: the field's reachable sky
    spec = drive("azel")
    return heliostat_records(
        [*ids, "reference"] if "reference" in fits else ids,
        {h: "azel" for h in [*ids, "reference"]},
        fits, sun, {h: 8.0 for h in ids}, after, delivery,
        default_parameters=resolve_names, fit_bound=lambda d, k: spec.fit_bound(k),
    )  # fmt: skip


def test_records_name_the_reason_and_the_next_step():
    p = len(resolve_names("azel"))
    fits = {
        "few": _fit(
            "few", 2, False, f"2 observations give 4 residuals, too few for {p} parameters"
        ),
        "big": _fit("big", 20, std={"axis2_zero_rad": 1e-4}, axis2_zero_rad=0.030),
        # the same term, but only 3 standard errors from zero: the data, not the hardware
        "weak": _fit("weak", 20, std={"axis2_zero_rad": 0.01}, axis2_zero_rad=0.030),
        "gone": _fit("gone", 20),
        "bound": _fit(
            "bound", 20, axis1_zero_rad=0.9999 * drive("azel").fit_bound("axis1_zero_rad")
        ),
        **{f"ok{i}": _fit(f"ok{i}", 20) for i in range(6)},
    }
    after = {h: 0.5 for h in fits} | {"few": 8.0, "big": 8.0, "weak": 8.0, "gone": 8.0, "none": 8.0}
    delivery = Delivery(
        states={h: ("confirmed", "") for h in fits if h not in ("few", "big", "weak", "gone")}
        | {"gone": ("unreachable", "no answer after 3 tries")},
        refused={"big": "big: parameter set turns the mirror by up to 31.000 mrad, more than "
                 "the maximum correction 20 mrad", "weak": "weak: ..."},
        correction_mrad={"big": 31.0, "weak": 31.0},
        max_correction_mrad=20.0,
    )  # fmt: skip
    recs = {r.heliostat: r for r in _records(fits, after, delivery)}
    # too few: p observations wanted (2p residuals), it has 2; the sky it lacks, named
    few = recs["few"]
    assert few.status == "fit failed" and "too-few-visits" in few.flags
    assert few.next_step.startswith(f"needs {p - 2} more visits at these sun positions: ")
    assert "midday, below 30°" in few.next_step and "morning, above 30°" in few.next_step
    assert "morning, below 30°" not in few.next_step  # it has those
    # refused: the limit, the figure, and the actuator of the largest term (30 mrad on
    # axis 2's zero)
    big = recs["big"]
    assert big.status == "refused" and big.delivery == "refused"
    assert "31.0 mrad above the safety limit of 20 mrad: inspect before forcing" in big.next_step
    assert "axis2_zero_rad = 30.0 ± 0.1 mrad: check actuator 2" in big.next_step
    weak = recs["weak"]
    assert "30.0 ± 10.0 mrad, poorly determined (under 5 standard errors)" in weak.next_step
    assert "refit first (visits at: morning, above 30°; midday, below 30°" in weak.next_step
    assert "then check actuator 2 (its zero" in weak.next_step
    assert big.reason.startswith("parameter set turns")  # the id prefix is dropped
    gone = recs["gone"]
    assert gone.status == "not delivered" and "delivery:unreachable" in gone.flags
    assert "re-run the same delivery command to resume" in gone.next_step
    bound = recs["bound"]
    assert bound.status == "check" and "at-bound:axis1_zero_rad" in bound.flags
    assert "check actuator 1" in bound.next_step
    assert recs["ok0"].status == "corrected" and recs["ok0"].next_step == ""
    assert recs["none"].status == "not observed"
    assert status_counts(recs.values()) == {
        "not observed": 1, "fit failed": 1, "refused": 2, "not delivered": 1, "check": 1,
        "corrected": 6,
    }  # fmt: skip
    steps = next_steps(list(recs.values()))
    assert [g.status for g in steps] == [
        "not observed",
        "fit failed",
        "refused",
        "not delivered",
        "check",
    ]
    assert set(steps[2].heliostats) == {"big", "weak"} and steps[2].title.endswith(": 2 heliostats")
    # JSON: NaN becomes None, figures rounded
    d = recs["few"].as_dict()
    assert (
        d["after_mrad"] == 8.0
        and d["loo_mrad"] is None
        and d["parameters"] == []  # nothing chosen: the fit failed
    )


def test_an_outlier_of_the_field_after_calibration_is_flagged():
    # 20 corrected heliostats at 0.4-0.6 mrad and one at 3 mrad: the robust threshold
    # (median + 5 MAD, at least twice the median) lies near 1 mrad; 3 mrad is flagged
    rng = np.random.default_rng(4)
    fits = {f"h{i}": _fit(f"h{i}", 20) for i in range(21)}
    after = {h: float(v) for h, v in zip(fits, rng.uniform(0.4, 0.6, 21), strict=True)}
    after["h20"] = 3.0
    dl = Delivery(states={h: ("confirmed", "") for h in fits}, max_correction_mrad=20.0)
    recs = {r.heliostat: r for r in _records(fits, after, dl)}
    assert recs["h20"].status == "check" and "high-after" in recs["h20"].flags
    assert sum(r.status == "check" for r in recs.values()) == 1
