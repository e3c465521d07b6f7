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
    # Running the same file again re-sends nothing: the journal has it settled.
    n = bus.stats.frames_in
    rc, out, _ = _run(capsys, *argv)
    assert rc == 0 and all(o["resumed"] for o in json.loads(out)["outcomes"])
    assert bus.stats.frames_in == n


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
        assert proc.wait(20) == 0


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
