"""``heliostat bridge ...`` and ``heliostat sim controllers`` end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from heliostat.cli import main
from heliostat.config import load_field
from heliostat.kinematics import error_names
from sim.controller_fixtures import corrections_for, field_toml
from sim.controllers import ControllerModel, EmulatedBus, specs_for_field


@pytest.fixture
def plant(tmp_path):
    fpath = tmp_path / "field.toml"
    fpath.write_text(field_toml(3))
    cfg = load_field(fpath)
    ctls = [ControllerModel(s, param_names=error_names(s.drive)) for s in specs_for_field(cfg)]
    bus = EmulatedBus(ctls, timing=False)
    bus.start()
    yield fpath, cfg, bus, tmp_path
    bus.stop()


def _run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_ping_and_status_json(plant, capsys):
    fpath, cfg, bus, _ = plant
    rc, out, _ = _run(capsys, "bridge", "ping", "--port", bus.port, "--field", str(fpath), "--json")
    rows = json.loads(out)
    assert rc == 0 and [r["address"] for r in rows] == [1, 2, 3]
    assert all(r["ok"] and r["drive"] == "azel" for r in rows)
    rc, out, _ = _run(capsys, "bridge", "status", "--port", bus.port, "--address", "2", "--json")
    (row,) = json.loads(out)
    assert rc == 0 and row["axis2_steps"] == cfg.heliostats["H002"].kinematics.axis2.max_steps - (
        97000 // 50
    )


def test_apply_dry_run_shows_frames_and_sends_nothing(plant, capsys):
    fpath, cfg, bus, tmp = plant
    corr = tmp / "c.json"
    corr.write_text(json.dumps(corrections_for(cfg, n_setpoints=1, seed=1)))
    rc, out, _ = _run(
        capsys,
        "bridge",
        "apply",
        str(corr),
        "--field",
        str(fpath),
        "--port",
        bus.port,
        "--dry-run",
        "--json",
    )
    doc = json.loads(out)
    assert rc == 0 and doc["dry_run"] and len(doc["commands"]) == 6
    move = doc["commands"][1]
    assert move["kind"] == "move" and move["writes"][0]["frame_hex"].startswith("01 10 00 40 00 08")
    assert bus.stats.frames_in == 0


def test_apply_dry_run_shows_corrections_against_the_limit(plant, capsys):
    """Each heliostat's correction in mrad next to max_correction_mrad: the parameter set's
    mirror turn (the planner's figure, checked against param_correction_mrad toward the
    setpoints' target) and the setpoint's axis change (checked against the steps)."""
    import numpy as np

    from firmware_bridge.safety import param_correction_mrad
    from heliostat.kinematics import KinematicErrors

    fpath, cfg, bus, tmp = plant
    corr = tmp / "c.json"
    doc = corrections_for(cfg, n_setpoints=1, seed=1)
    corr.write_text(json.dumps(doc))
    argv = ["bridge", "apply", str(corr), "--field", str(fpath), "--port", bus.port, "--dry-run"]
    rc, out, _ = _run(capsys, *argv, "--json")
    got = json.loads(out)
    limit = cfg.safety.max_correction_mrad
    assert rc == 0 and got["max_correction_mrad"] == limit
    rows = {r["heliostat"]: r for r in got["corrections"]}
    assert list(rows) == ["H001", "H002", "H003"]
    for rec in doc["heliostats"]:
        h = cfg.heliostats[rec["heliostat"]]
        row = rows[h.id]
        (sp,) = rec["setpoints"]
        errors = KinematicErrors.from_dict(h.kinematics.drive, rec["parameters"])
        aim = cfg.targets[sp["target"]].centre_enu_m
        # Rounded to 3 decimals for display: 5e-4 mrad.
        assert row["params_mrad"] == pytest.approx(param_correction_mrad(h, errors, aim), abs=5e-4)
        ang = h.kinematics.steps_to_angles(
            np.array(
                [
                    [sp["axis1_steps"], sp["axis2_steps"]],
                    [sp["nominal_axis1_steps"], sp["nominal_axis2_steps"]],
                ],
                dtype=float,
            )
        )
        assert row["setpoints_mrad"] == pytest.approx(
            1e3 * np.max(np.abs(ang[0] - ang[1])), abs=5e-4
        )
        worst = max(row["params_mrad"], row["setpoints_mrad"])
        assert row["of_limit"] == f"{100 * worst / limit:.0f}%"
        zero = f"{1e3 * rec['parameters']['axis1_zero_rad']:+.3f} mrad"
        assert f"axis1_zero {zero}" in row["changes"]
    rc, out, _ = _run(capsys, *argv)
    assert rc == 0 and f"max_correction_mrad = {limit:g} mrad" in out
    assert "changes: axis1_tilt_e" in out
    assert bus.stats.frames_in == 0


def test_apply_on_the_emulator_confirms_all(plant, capsys):
    fpath, cfg, bus, tmp = plant
    corr = tmp / "c.json"
    corr.write_text(json.dumps(corrections_for(cfg, n_setpoints=2, seed=2)))
    argv = [
        "bridge",
        "apply",
        str(corr),
        "--field",
        str(fpath),
        "--port",
        bus.port,
        "--journal",
        str(tmp / "j.sqlite"),
        "--json",
    ]
    rc, out, _ = _run(capsys, *argv)
    assert rc == 0 and json.loads(out)["counts"] == {"confirmed": 9}
    # Running the same file again re-sends nothing: the journal has it settled and
    # each controller, read back, still holds its parameter set and last setpoint.
    n = bus.stats.by_kind[16]
    rc, out, _ = _run(capsys, *argv)
    doc = json.loads(out)
    assert rc == 0 and all(o["resumed"] for o in doc["outcomes"])
    assert doc["counts"] == {"confirmed": 6, "superseded": 3}
    assert sum(o["replayed"] for o in doc["outcomes"]) == 6
    assert bus.stats.by_kind[16] == n


def test_real_port_needs_confirmation_and_unknown_address_is_refused(plant, capsys, monkeypatch):
    fpath, cfg, _, tmp = plant
    ctl = ControllerModel(specs_for_field(cfg)[0])
    with EmulatedBus([ctl], timing=False) as quiet:
        from firmware_bridge.ports import withdraw

        withdraw([quiet.port])  # an unannounced pty looks like a real serial line
        monkeypatch.setattr(sys, "stdin", open(os.devnull))
        rc, _, err = _run(
            capsys,
            "bridge",
            "move",
            "--field",
            str(fpath),
            "--port",
            quiet.port,
            "--address",
            "1",
            "--axis1-steps",
            "10",
            "--axis2-steps",
            "10",
            "--journal",
            str(tmp / "j.sqlite"),
        )
        assert rc == 2 and "is a real serial port: pass --yes" in err
        rc, _, err = _run(
            capsys,
            "bridge",
            "move",
            "--field",
            str(fpath),
            "--port",
            quiet.port,
            "--address",
            "42",
            "--axis1-steps",
            "10",
            "--axis2-steps",
            "10",
        )
        assert rc == 2 and "address 42 is not in the field config" in err
        assert quiet.stats.frames_in == 0
        rc, out, _ = _run(
            capsys,
            "bridge",
            "move",
            "--field",
            str(fpath),
            "--port",
            quiet.port,
            "--address",
            "1",
            "--axis1-steps",
            "10",
            "--axis2-steps",
            "10",
            "--yes",
            "--journal",
            str(tmp / "j.sqlite"),
            "--json",
        )
        assert rc == 0 and json.loads(out)["counts"] == {"confirmed": 1}
        assert ctl.target_steps == [10, 10]


def test_sim_controllers_command_serves_until_interrupted(tmp_path):
    fpath = tmp_path / "field.toml"
    fpath.write_text(field_toml(2))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "heliostat.cli",
            "sim",
            "controllers",
            "--field",
            str(fpath),
            "--json",
            "--no-timing",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C in a terminal: SIGINT at its default, even when this test runs in a
        # background job (which starts with SIGINT ignored, and so would its child).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
            if line.startswith("}"):
                break
        info = json.loads("".join(lines))["buses"]["bus1"]
        assert info["addresses"] == [1, 2]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "heliostat.cli",
                "bridge",
                "ping",
                "--port",
                info["port"],
                "--field",
                str(fpath),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert [row["ok"] for row in json.loads(r.stdout)] == [True, True]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(20) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(proc.stderr.read()[-3000:]) from None


def test_address_zero_is_broadcast_stow_only(plant, capsys):
    fpath, cfg, bus, tmp = plant
    rc, _, err = _run(
        capsys,
        "bridge",
        "move",
        "--field",
        str(fpath),
        "--port",
        bus.port,
        "--address",
        "0",
        "--axis1-steps",
        "1",
        "--axis2-steps",
        "1",
    )
    assert rc == 2 and "only to stow" in err and bus.stats.frames_in == 0
    rc, out, _ = _run(
        capsys,
        "bridge",
        "stow",
        "--field",
        str(fpath),
        "--port",
        bus.port,
        "--address",
        "0",
        "--journal",
        str(tmp / "j.sqlite"),
        "--json",
    )
    doc = json.loads(out)
    assert rc == 0 and doc["counts"] == {"confirmed": 3}
    assert bus.stats.broadcasts == 1
    assert all(c.target_steps == list(c.spec.stow_steps) for c in bus.controllers.values())


# --------------------------------------------------------------------------- selections
def _two_buses(fpath):
    """The plant's field with a second (empty) bus declared."""
    fpath.write_text(fpath.read_text() + '[buses.bus2]\nport = "loop://"\n')


@pytest.mark.parametrize("action", ["move", "stow"])
def test_heliostat_on_another_bus_is_refused_not_skipped(plant, capsys, action):
    fpath, cfg, bus, tmp = plant
    _two_buses(fpath)
    argv = ["bridge", action, "--field", str(fpath), "--port", bus.port, "--heliostat", "H001"]
    argv += ["--bus", "bus2", "--journal", str(tmp / "j.sqlite")]
    if action == "move":
        argv += ["--axis1-steps", "1000", "--axis2-steps", "45000"]
    rc, _, err = _run(capsys, *argv)
    assert rc == 2 and "H001 is on bus 'bus1', not on --bus 'bus2'" in err
    assert bus.stats.frames_in == 0
    # The right bus works.
    argv[argv.index("bus2")] = "bus1"
    rc, _, _ = _run(capsys, *argv)
    assert rc == 0 and bus.stats.frames_in > 0


def test_planned_commands_without_an_outcome_never_exit_0(plant, capsys, monkeypatch):
    from firmware_bridge.delivery import Bridge

    fpath, cfg, bus, tmp = plant
    monkeypatch.setattr(Bridge, "run", lambda self, *a, **k: [])
    rc, _, err = _run(
        capsys,
        *["bridge", "stow", "--field", str(fpath), "--port", bus.port, "--heliostat", "H002"],
        *["--journal", str(tmp / "j.sqlite")],
    )
    assert rc == 1 and "1 of 1 planned command(s) have no outcome" in err


@pytest.mark.parametrize(
    "select",
    [
        ["--heliostat", "H001", "--broadcast"],
        ["--address", "1", "--broadcast"],
        ["--heliostat", "H001", "--address", "0"],
    ],
)
def test_broadcast_stow_needs_the_whole_bus(plant, capsys, select):
    fpath, cfg, bus, tmp = plant
    for c in bus.controllers.values():  # away from stow, so a stow would show
        c.target_steps = [1000, 45000]
    argv = ["bridge", "stow", "--field", str(fpath), "--port", bus.port, *select]
    rc, _, err = _run(capsys, *argv, "--journal", str(tmp / "j.sqlite"))
    assert rc == 2 and "broadcast stow reaches every controller on bus 'bus1'" in err
    assert "H001, H002, H003" in err and bus.stats.frames_in == bus.stats.broadcasts == 0
    assert all(c.target_steps == [1000, 45000] for c in bus.controllers.values())


def test_broadcast_dry_run_and_prompt_name_the_bus(plant, capsys, monkeypatch):
    fpath, cfg, bus, tmp = plant
    rc, out, _ = _run(
        capsys,
        "bridge",
        "stow",
        "--field",
        str(fpath),
        "--port",
        bus.port,
        "--broadcast",
        "--dry-run",
    )
    assert rc == 0 and "dry run: broadcast to bus 'bus1'" in out and "H001, H002, H003" in out
    # One frame to address 0: FC16, 4 registers at 64 (0x40), command id shown as 0.
    assert "to address 0: 00 10 00 40 00 04 08 00 00 00 00 00 02 00 00" in out
    rc, out, _ = _run(
        capsys,
        *["bridge", "stow", "--field", str(fpath), "--port", bus.port, "--broadcast"],
        *["--dry-run", "--json"],
    )
    (cast,) = json.loads(out)["broadcasts"]
    assert cast["bus"] == "bus1" and cast["heliostats"] == ["H001", "H002", "H003"]
    assert cast["writes"][0]["frame_hex"].startswith("00 10 00 40 00 04")
    assert bus.stats.frames_in == 0
    # On a real (unannounced) port, without a terminal, the refusal names the broadcast.
    ctl = ControllerModel(specs_for_field(cfg)[0])
    with EmulatedBus([ctl], timing=False) as quiet:
        from firmware_bridge.ports import withdraw

        withdraw([quiet.port])
        monkeypatch.setattr(sys, "stdin", open(os.devnull))
        rc, _, err = _run(
            capsys, "bridge", "stow", "--field", str(fpath), "--port", quiet.port, "--broadcast"
        )
        assert rc == 2 and "send a broadcast stow to bus 'bus1'" in err
        assert quiet.stats.frames_in == 0


def test_single_heliostat_bus_may_be_stowed_by_broadcast(tmp_path, capsys):
    fpath = tmp_path / "field.toml"
    fpath.write_text(field_toml(1))
    cfg = load_field(fpath)
    ctls = [ControllerModel(s) for s in specs_for_field(cfg)]
    with EmulatedBus(ctls, timing=False) as bus:
        rc, out, _ = _run(
            capsys,
            *["bridge", "stow", "--field", str(fpath), "--port", bus.port, "--heliostat", "H001"],
            *["--broadcast", "--json", "--journal", str(tmp_path / "j.sqlite")],
        )
        assert rc == 0 and json.loads(out)["counts"] == {"confirmed": 1}
        assert bus.stats.broadcasts == 1


@pytest.mark.parametrize("action", ["status", "ping"])
@pytest.mark.parametrize("address", ["0", "-1", "248", "300"])
def test_read_address_out_of_range_puts_nothing_on_the_wire(plant, capsys, action, address):
    _, _, bus, _ = plant
    rc, _, err = _run(
        capsys, "bridge", action, "--port", bus.port, "--address", address, "--timeout-s", "0.05"
    )
    assert rc == 2 and "--address: controller address must be an integer 1..247" in err
    assert bus.stats.frames_in == 0 and bus.stats.broadcasts == 0


# --------------------------------------------------------------------------- announcements
def test_emulator_withdraws_its_announcement_on_sigterm(tmp_path):
    from firmware_bridge.ports import announce_dir, is_simulated

    fpath = tmp_path / "field.toml"
    fpath.write_text(field_toml(1))
    proc = subprocess.Popen(
        [sys.executable, "-m", "heliostat.cli", "sim", "controllers", "--field", str(fpath)]
        + ["--json", "--no-timing"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        while not lines or not lines[-1].startswith("}"):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        port = json.loads("".join(lines))["buses"]["bus1"]["port"]
        announcement = announce_dir() / f"{proc.pid}.json"
        assert announcement.exists() and is_simulated(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    assert rc == 0
    assert not announcement.exists()


def test_announcements_of_other_users_are_ignored(tmp_path, monkeypatch):
    from firmware_bridge import ports

    monkeypatch.setattr(ports.tempfile, "gettempdir", lambda: str(tmp_path))
    fake = "/dev/pts/fake-heliostat-test"
    path = ports.announce([fake])  # this (live) process announces it
    assert ports.is_simulated(fake)
    uid = os.getuid()
    monkeypatch.setattr(ports.os, "getuid", lambda: uid + 1)  # now the file is someone else's
    assert not ports.is_simulated(fake)
    path.unlink()


def test_rerun_text_output_says_what_is_replayed_and_what_is_confirmed_now(plant, capsys):
    fpath, cfg, bus, tmp = plant
    corr = tmp / "c.json"
    corr.write_text(json.dumps(corrections_for(cfg, n_setpoints=1, seed=2)))
    argv = ["bridge", "apply", str(corr), "--field", str(fpath), "--port", bus.port]
    argv += ["--journal", str(tmp / "j.sqlite")]
    rc, out, _ = _run(capsys, *argv)
    assert rc == 0 and "6 confirmed now; 0 replayed" in out
    # Controller 2 is replaced by a new one (no parameter set, at its stow position).
    old = bus.controllers[2]
    bus.controllers[2] = ControllerModel(old.spec, param_names=error_names(old.spec.drive))
    rc, out, _ = _run(capsys, *argv)
    assert rc == 0
    assert "2 confirmed now; 4 replayed from an earlier run (verified now by read-back" in out
    assert out.count("earlier run, verified now") == 4
    assert bus.controllers[2].param_set_id != 0
