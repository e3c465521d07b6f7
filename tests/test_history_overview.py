"""``heliostat history``'s overview, read in one pass per table, gives the same rows as
the heliostat-by-heliostat records it replaced."""

from __future__ import annotations

import pytest

from heliostat.calibration.fit import FitResult
from heliostat.campaign.history import History, ObservationRecord, heliostat_record, overview
from heliostat.kinematics import KinematicErrors

NAMES = ("axis1_zero_rad", "axis2_zero_rad")


def _fit(hid: str, ok: bool = True, rms_after: float = 0.1) -> FitResult:
    return FitResult(
        hid,
        "azel",
        NAMES,
        KinematicErrors.from_dict("azel", {"axis1_zero_rad": rms_after * 1e-3}),
        {n: 1e-4 for n in NAMES},
        ok,
        "" if ok else "too few points",
        n_points=12,
        rms_before_mrad=5.0,
        rms_after_mrad=rms_after,
        loo_rms_mrad=rms_after * 1.2,
    )


def _obs(hid: str, day: int) -> ObservationRecord:
    t = f"2025-04-{day:02d}T10:00:00Z"
    return ObservationRecord(
        hid, t, t, 150.0, 40.0, -40000, 45000, "cal1", 0.1, -0.2, 0.1, 0.0, 49.8, 0.002
    )


class _Out:
    """A bridge outcome as History.add_delivery reads it."""

    def __init__(self, hid: str, state: str) -> None:
        self.heliostat, self.address, self.command_id = hid, 1, 7
        self.state, self.attempts, self.detail = state, 1, ""


def _overview_by_record(h: History) -> list[dict]:
    """The overview as it was built before: one heliostat_record per heliostat."""
    rows = []
    for hid in h.heliostat_ids():
        rec = heliostat_record(h, hid)
        ok = [f for f in rec["fits"] if f["success"]]
        last = ok[-1] if ok else None
        dl = rec["deliveries"][-1] if rec["deliveries"] else None
        rows.append(
            {
                "heliostat": hid,
                "observations": rec["observations"]["count"],
                "skipped": sum(rec["observations"]["skipped"].values()),
                "fits": len(rec["fits"]),
                "last_fit_utc": last["time_utc"] if last else None,
                "rms_after_mrad": last["rms_after_mrad"] if last else None,
                "loo_rms_mrad": last["loo_rms_mrad"] if last else None,
                "drift_rms_mrad": rec["drift"][-1]["pointing_change_rms_mrad"]
                if rec["drift"]
                else None,
                "last_delivery": dl["state"] if dl else None,
            }
        )
    return rows


@pytest.fixture
def history(tmp_path):
    """Heliostats in every state the overview distinguishes, interleaved in id order."""
    path = tmp_path / "history.sqlite"
    with History(path) as h:
        for d in (1, 2, 3):
            h.add_observation(_obs("H01", d))  # observations only
            h.add_observation(_obs("H04", d))
        h.add_visit("H02", "2025-04-01T10:00:00Z", "2025-04-01T10:00:05Z", "no_spot", "cloud")
        h.add_visit("H02", "2025-04-02T10:00:00Z", "2025-04-02T10:00:05Z", "unreachable", "")
        h.add_fit(_fit("H03", ok=False), "2025-04-02T12:00:00Z", 1)  # a failed fit only
        # H04: two successful fits, the second against the first (drift), a failed third;
        # two deliveries, the last one failed.
        a = h.add_fit(_fit("H04", rms_after=0.3), "2025-04-02T12:00:00Z", 2)
        h.add_fit(_fit("H05", rms_after=0.7), "2025-04-02T12:30:00Z", 2)
        b = h.add_fit(_fit("H04", rms_after=0.2), "2025-04-03T12:00:00Z", 3, a, (0.4, 0.9))
        h.add_fit(_fit("H04", ok=False), "2025-04-04T12:00:00Z", 3)
        for fit, state in ((a, "confirmed"), (b, "unreachable")):
            cid = h.propose(fit, "H04", "2025-04-03T12:01:00Z")
            h.add_delivery(cid, "2025-04-03T12:01:01Z", "/dev/ttyUSB0", _Out("H04", state))
        # H05: three successful fits, the last not fitted against the one before it
        c = h.add_fit(_fit("H05", rms_after=0.6), "2025-04-03T12:30:00Z", 2, 1, (0.1, 0.2))
        h.add_fit(_fit("H05", rms_after=0.5), "2025-04-04T12:30:00Z", 2, c - 2, (0.3, 0.4))
        h.add_fit(_fit("H06"), "2025-04-04T13:00:00Z", 1)  # one successful fit
    return path


def test_overview_equals_the_record_of_each_heliostat(history):
    with History(history, readonly=True) as h:
        fast, ref = overview(h), _overview_by_record(h)
    assert fast == ref
    by = {r["heliostat"]: r for r in fast}
    assert list(by) == ["H01", "H02", "H03", "H04", "H05", "H06"]
    assert (by["H01"]["observations"], by["H01"]["fits"]) == (3, 0)
    assert by["H02"]["skipped"] == 2 and by["H02"]["last_fit_utc"] is None
    assert by["H03"]["fits"] == 1 and by["H03"]["rms_after_mrad"] is None
    assert by["H04"]["fits"] == 3 and by["H04"]["rms_after_mrad"] == 0.2
    assert by["H04"]["drift_rms_mrad"] == 0.4 and by["H04"]["last_delivery"] == "unreachable"
    assert by["H05"]["drift_rms_mrad"] is None  # not fitted against the fit before it
    assert by["H06"]["drift_rms_mrad"] is None and by["H06"]["last_delivery"] is None


def test_an_unknown_heliostat_is_named_with_a_short_list(tmp_path):
    with History(tmp_path / "h.sqlite") as h:
        for k in range(30):
            h.add_observation(_obs(f"H{k:02d}", 1))
        with pytest.raises(KeyError, match=r"'H99' \(have: H00, H01, .*, \.\.\. \(30 heliostats\)"):
            heliostat_record(h, "H99")
    with History(tmp_path / "empty.sqlite") as h, pytest.raises(KeyError, match="have: none"):
        heliostat_record(h, "H01")
