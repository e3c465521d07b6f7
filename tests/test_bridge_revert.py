"""``heliostat bridge revert``: a controller back on its previous parameter set, by the
history database's confirmed deliveries, through apply's safety checks."""

from __future__ import annotations

import json

import pytest

from firmware_bridge import registers as R
from firmware_bridge.delivery import ActuatorCommand, Bridge
from firmware_bridge.safety import block_values
from firmware_bridge.transport import ModbusLink
from heliostat.calibration.fit import FitResult
from heliostat.campaign.history import History, parameter_sets
from heliostat.cli import main
from heliostat.config import load_field
from heliostat.kinematics import KinematicErrors, error_names
from sim.controller_fixtures import field_toml
from sim.controllers import ControllerModel, EmulatedBus, specs_for_field

NAMES = ("axis1_zero_rad", "axis2_zero_rad", "mirror_collimation_rad")
SET_A = {"axis1_zero_rad": 1.0e-3, "axis2_zero_rad": -0.5e-3, "mirror_collimation_rad": 0.2e-3}
SET_B = {"axis1_zero_rad": 2.0e-3, "axis2_zero_rad": 1.0e-3, "mirror_collimation_rad": -0.4e-3}


def _values(params: dict) -> tuple[float, ...]:
    """The block the bridge sends for a set (without a zero backlash pair)."""
    return block_values("azel", tuple(float(params.get(n, 0.0)) for n in error_names("azel")))


def _deliver(bus, hist, params, when):
    """What a campaign does: a fit, its correction, sent and confirmed, recorded."""
    fit = FitResult(
        "H001",
        "azel",
        NAMES,
        KinematicErrors.from_dict("azel", params),
        {n: 1e-4 for n in NAMES},
        True,
        n_points=12,
    )
    fid = hist.add_fit(fit, when, 0)
    cid = hist.propose(fid, "H001", when)
    with ModbusLink(bus.port, timeout_s=0.1, inter_frame_s=0.0) as link:
        cmd = ActuatorCommand("H001", 1, "params", params=_values(params))
        (out,) = Bridge(link).run(f"campaign-{fid}", "test", [cmd])
    assert out.state == "confirmed"
    hist.add_delivery(cid, when, bus.port, out)
    hist.set_correction(cid, "sent", when)
    return fid


@pytest.fixture
def plant(tmp_path):
    fpath = tmp_path / "field.toml"
    fpath.write_text(field_toml(2, max_correction_mrad=20.0))
    cfg = load_field(fpath)
    ctls = [ControllerModel(s, param_names=error_names(s.drive)) for s in specs_for_field(cfg)]
    bus = EmulatedBus(ctls, timing=False)
    bus.start()
    db = tmp_path / "history.sqlite"
    with History(db) as hist:
        fa = _deliver(bus, hist, SET_A, "2026-03-01T12:00:00Z")
        fb = _deliver(bus, hist, SET_B, "2026-03-08T12:00:00Z")
    argv = ["bridge", "revert", "--heliostat", "H001", "--field", str(fpath), "--port", bus.port]
    argv += ["--db", str(db), "--journal", str(tmp_path / "j.sqlite")]
    yield bus, ctls[0], db, argv, (fa, fb)
    bus.stop()


def _holds(ctl, params) -> bool:
    return ctl.active_params == R.encode_params(_values(params))


def test_revert_goes_back_one_set_then_to_nominal(plant, capsys):
    bus, ctl, db, argv, (fa, fb) = plant
    assert _holds(ctl, SET_B)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"revert H001: from fit {fb}'s set (confirmed 2026-03-08T12:00:00Z) ")
    assert f"to fit {fa}'s set (confirmed 2026-03-01T12:00:00Z)" in out
    assert _holds(ctl, SET_A)  # read from the controller itself
    with History(db, readonly=True) as hist:
        assert [s["fit_id"] for s in parameter_sets(hist, "H001")] == [fa, fa]
        assert {c["fit_id"]: c["state"] for c in hist.corrections("H001")}[fb] == "reverted"
    # Once more: there was no correction before A, so back to the nominal set.
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [o["state"] for o in doc["outcomes"]] == ["confirmed"]
    assert _holds(ctl, {})
    with History(db, readonly=True) as hist:
        assert parameter_sets(hist, "H001") == []
    # Nothing left: a clear error, nothing sent.
    n = bus.stats.frames_in
    assert main(argv) == 2
    assert "nothing to revert" in capsys.readouterr().err and bus.stats.frames_in == n


def test_revert_dry_run_shows_the_change_against_the_limit(plant, capsys):
    bus, ctl, db, argv, (fa, fb) = plant
    n = bus.stats.frames_in  # the set-up's deliveries
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: 1 command(s), nothing sent" in out
    assert "axis1_zero +1.000 mrad" in out  # set A's values
    assert "corrections against max_correction_mrad = 20 mrad" in out
    assert bus.stats.frames_in == n and _holds(ctl, SET_B)


def test_revert_to_a_set_over_the_limit_is_refused(plant, capsys):
    bus, ctl, db, argv, (fa, fb) = plant
    with History(db) as hist:  # an old set far over today's limit, then a good one
        _deliver(bus, hist, {"axis1_zero_rad": 40e-3}, "2026-03-09T12:00:00Z")
        _deliver(bus, hist, SET_B, "2026-03-10T12:00:00Z")
    n = bus.stats.frames_in
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "20" in err and "nothing sent" in err
    assert bus.stats.frames_in == n and _holds(ctl, SET_B)
