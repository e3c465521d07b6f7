"""Delivery output that helps recovery: a short reason per outcome (timeout, CRC errors,
Modbus exception n with its name, the controller's reject reason), failed vs unreachable,
the next step, and a re-run that resumes and says so."""

from __future__ import annotations

import json
import sqlite3

import pytest
from pymodbus.pdu import ExceptionResponse

from firmware_bridge import registers as R
from firmware_bridge.delivery import ActuatorCommand, Bridge, RetryPolicy
from firmware_bridge.journal import Journal
from firmware_bridge.reasons import next_step
from firmware_bridge.transport import ModbusLink
from heliostat.cli import main
from heliostat.config import load_field
from heliostat.kinematics import error_names
from sim.controller_fixtures import corrections_for, field_toml
from sim.controllers import ControllerModel, EmulatedBus, FaultProfile, specs_for_field


def _controllers(cfg):
    return [ControllerModel(s, param_names=error_names(s.drive)) for s in specs_for_field(cfg)]


def _busy(ctl):
    """``ctl`` answers every write with Modbus exception 6 (server device busy) until the
    returned switch is set to False."""
    orig, on = ctl.handle, {"busy": True}

    def handle(pdu, broadcast=False):
        if on["busy"] and pdu.function_code == 16 and not broadcast:
            resp = ExceptionResponse(16, 6)
            resp.dev_id = ctl.spec.address
            return resp
        return orig(pdu, broadcast)

    ctl.handle = handle
    return on


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "field.toml"
    p.write_text(field_toml(2))
    return load_field(p)


def _deliver(bus, cmd, attempts=3):
    with bus, ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0.0) as link:
        out = Bridge(link, retry=RetryPolicy(attempts), sleep=lambda s: None).deliver(cmd, 901)
        return out, link.counters


def test_garbled_replies_are_crc_errors_not_silence(cfg):
    bus = EmulatedBus(_controllers(cfg), faults=FaultProfile(corrupt_p=1.0), timing=False)
    fault, n = bus._fault, {"frames": 0}

    def replies_only(frame):  # requests reach the controller; every reply is garbled
        n["frames"] += 1
        return fault(frame) if n["frames"] % 2 == 0 else frame

    bus._fault = replies_only
    out, counters = _deliver(bus, ActuatorCommand("H001", 1, "move", (5, 6)))
    # No valid reply at all: unreachable, but the reason tells a garbled line from silence.
    assert out.state == "unreachable" and out.reason == "CRC errors ×3"
    assert counters.crc_errors == 3 and "CRC error" in out.detail
    assert "termination" in next_step(out)


def test_silence_is_a_timeout(cfg):
    bus = EmulatedBus(_controllers(cfg)[:1], timing=False)  # controller 2 is not on the line
    out, counters = _deliver(bus, ActuatorCommand("H002", 2, "move", (5, 6)))
    assert (out.state, out.reason, counters.crc_errors) == ("unreachable", "timeout ×3", 0)
    assert "no reply" in out.detail and "power, address and wiring" in next_step(out)


def test_a_busy_controller_fails_with_the_exception_named(cfg):
    ctls = _controllers(cfg)
    _busy(ctls[0])
    out, _ = _deliver(EmulatedBus(ctls, timing=False), ActuatorCommand("H001", 1, "move", (5, 6)))
    assert (out.state, out.exception_code) == ("failed", 6)
    assert out.reason == "exception 6 (server device busy) ×3"
    assert next_step(out) == "controller busy: re-run later"


def test_a_faulted_controller_rejects_with_its_reason(cfg):
    ctls = _controllers(cfg)
    ctls[0].set_fault(R.Fault(1))
    out, _ = _deliver(EmulatedBus(ctls, timing=False), ActuatorCommand("H001", 1, "move", (5, 6)))
    assert out.state == "rejected" and out.attempts == 1
    assert out.reason == "exception 4 (server device failure): FAULT_ACTIVE"
    assert "clear the controller's fault" in next_step(out)
    assert next_step(out).startswith("final")


def test_journal_without_a_reason_column_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite"
    with Journal(path) as j:
        j.create_batch("b", "t", [("H001", "loop://", 1, "stow", {}, None)])
    db = sqlite3.connect(path)  # the journal as written before outcomes had a reason
    db.execute("ALTER TABLE commands DROP COLUMN reason")
    db.commit()
    db.close()
    with Journal(path) as j:
        (e,) = j.entries("b")
        assert e.reason == ""
        j.mark(e.row_id, "unreachable", 2, None, "long text", "timeout ×2")
        assert j.entries("b")[0].reason == "timeout ×2"


def test_cli_names_reasons_and_next_steps_and_a_rerun_resumes(tmp_path, capsys):
    """Five controllers: H001 fine, H002 busy, H003 faulted, H004 fine, H005 absent."""
    fpath = tmp_path / "field.toml"
    fpath.write_text(field_toml(5))
    cfg = load_field(fpath)
    ctls = _controllers(cfg)
    busy = _busy(ctls[1])
    ctls[2].set_fault(R.Fault(1))
    corr = tmp_path / "c.json"
    corr.write_text(json.dumps(corrections_for(cfg, n_setpoints=1, seed=1)))
    with EmulatedBus(ctls[:4], timing=False) as bus:
        argv = ["bridge", "apply", str(corr), "--field", str(fpath), "--port", bus.port]
        argv += ["--journal", str(tmp_path / "j.sqlite"), "--attempts", "2", "--timeout-s", "0.05"]
        assert main(argv) == 1
        out = capsys.readouterr().out
        rows = {tuple(ln.split()[:3]): ln for ln in out.splitlines() if ln.startswith("H00")}
        assert "exception 6 (server device busy) ×2" in rows[("H002", "2", "move")]
        assert "exception 4 (server device failure): FAULT_ACTIVE" in rows[("H003", "3", "move")]
        assert "unreachable" in rows[("H005", "5", "move")]
        assert "timeout ×" in rows[("H005", "5", "move")]
        # One next-step line per heliostat with a problem, and how to resume.
        assert "  H002 (2 commands failed: exception 6" in out
        assert "  H005 (2 commands unreachable: timeout" in out
        assert "re-run the same command to resume: it sends only the 4 command(s)" in out
        assert "resuming" not in out

        busy["busy"] = False  # the busy controller is free again; H005 still absent
        assert main(argv + ["--json"]) == 1
        doc = json.loads(capsys.readouterr().out)
        got = {(o["heliostat"], o["kind"]): o for o in doc["outcomes"]}
        assert got["H002", "move"]["state"] == "confirmed" and got["H002", "move"]["resumed"]
        assert got["H003", "move"]["carried"] and got["H003", "move"]["reason"].endswith(
            "FAULT_ACTIVE"
        )  # the reason comes back from the journal
        assert got["H001", "move"]["replayed"]
        assert got["H005", "move"]["next_step"].startswith("no reply")
        assert doc["rerun_resumes"] and list(doc["resumed_from_utc"]) == [bus.port]

        assert main(argv) == 1
        out = capsys.readouterr().out
        assert out.startswith(f"{bus.port}: resuming the run of ")
        rows = {tuple(ln.split()[:3]): ln for ln in out.splitlines() if ln.startswith("H00")}
        assert "earlier run, verified now" in rows[("H002", "2", "move")]
        assert "earlier run  " in rows[("H003", "3", "move")]  # carried, nothing sent
        assert "resumed" in rows[("H005", "5", "move")]
        assert "it sends only the 2 command(s)" in out


# --------------------------------------------------------------------------- loop:// fields
def test_loopback_port_says_what_to_do_in_one_line(tmp_path, capsys):
    fpath = tmp_path / "field.toml"
    fpath.write_text(field_toml(3))  # a simulated field: its bus is on loop://
    assert main(["bridge", "ping", "--field", str(fpath)]) == 2
    out = capsys.readouterr()
    (line,) = out.err.strip().splitlines()
    assert out.out == "" and f"bus 'bus1' of {fpath} has port loop://" in line
    assert f"heliostat sim controllers --field {fpath} --write-field" in line


def test_emulator_field_copy_points_at_its_ports(tmp_path, capsys):
    from heliostat.commands.sim_controllers import write_field_copy
    from heliostat.errors import InputError

    fpath = tmp_path / "field.toml"
    fpath.write_text(field_toml(2))
    cfg = load_field(fpath)
    with EmulatedBus(_controllers(cfg), timing=False) as bus:
        copy = tmp_path / "emulated.toml"
        write_field_copy(str(fpath), {"bus1": bus.port}, str(copy))
        got = load_field(copy)
        assert got.buses["bus1"].port == bus.port
        assert got.heliostats.keys() == cfg.heliostats.keys()  # the rest is the same field
        assert got.safety == cfg.safety
        assert main(["bridge", "ping", "--field", str(copy), "--json"]) == 0
        assert [r["ok"] for r in json.loads(capsys.readouterr().out)] == [True, True]
    with pytest.raises(InputError, match="bus 'other' that \\[buses\\] does not define"):
        write_field_copy(str(fpath), {"other": "/dev/pts/9"}, str(tmp_path / "x.toml"))


def test_ping_rows_give_a_short_error_and_the_detail_in_json(tmp_path, capsys):
    fpath = tmp_path / "field.toml"
    fpath.write_text(field_toml(2))
    cfg = load_field(fpath)
    with EmulatedBus(_controllers(cfg)[:1], timing=False) as bus:  # controller 2 absent
        argv = ["bridge", "ping", "--field", str(fpath), "--port", bus.port, "--timeout-s", "0.05"]
        assert main(argv) == 1
        rows = [ln.split() for ln in capsys.readouterr().out.splitlines()[2:]]
        assert rows[1][:3] == ["H002", "2", "False"] and rows[1][-1] == "timeout"
        assert main(argv + ["--json"]) == 1
        bad = json.loads(capsys.readouterr().out)[1]
        assert bad["error"] == "timeout" and "no reply to read" in bad["detail"]
