"""Delivery: safety refusals, confirmation, retries over a faulty line, journal resume."""

from __future__ import annotations

import pytest

from firmware_bridge.delivery import ActuatorCommand, Bridge, RetryPolicy
from firmware_bridge.errors import ActuatorError, SafetyRefused
from firmware_bridge.journal import Journal
from firmware_bridge.safety import plan_corrections, plan_move
from firmware_bridge.transport import ModbusLink
from heliostat.config import load_field
from heliostat.kinematics import error_names
from sim.controller_fixtures import (
    check_against_truth,
    corrections_for,
    field_toml,
    run_reliability,
)
from sim.controllers import ControllerModel, EmulatedBus, FaultProfile, specs_for_field


@pytest.fixture
def field(tmp_path):
    p = tmp_path / "field.toml"
    p.write_text(field_toml(4, max_correction_mrad=20.0))
    return load_field(p)


def _bus(cfg, faults=None, seed=0):
    ctls = [ControllerModel(s, param_names=error_names(s.drive)) for s in specs_for_field(cfg)]
    return EmulatedBus(ctls, faults=faults, seed=seed, timing=False), ctls


def _link(bus):
    return ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0.0)


# --------------------------------------------------------------------------- safety
def test_setpoint_outside_limits_is_refused_before_the_wire(field):
    with pytest.raises(
        SafetyRefused, match=r"axis2 setpoint 92001 .* outside the actuator limits \[-5000, 92000\]"
    ):
        plan_move(field, "H001", (0, 92001))
    with pytest.raises(SafetyRefused, match="'H099' is not in the field config"):
        plan_move(field, "H099", (0, 0))


def test_corrections_over_the_maximum_are_refused_with_every_problem(field):
    doc = corrections_for(field, n_setpoints=2, seed=3, offset_steps=100)
    # 1000 steps/deg: 1200 steps = 1.2° = 20.94 mrad > 20 mrad on axis 1.
    sp = doc["heliostats"][0]["setpoints"][0]
    sp["axis1_steps"] = sp["nominal_axis1_steps"] + 1200
    # An elevation zero offset of 25 mrad turns the mirror by exactly 25 mrad (the
    # elevation axis is perpendicular to the normal), over the 20 mrad maximum.
    doc["heliostats"][1]["parameters"] = {"axis2_zero_rad": 0.025}
    doc["heliostats"].append({"heliostat": "H777", "parameters": {}})
    with pytest.raises(SafetyRefused) as exc:
        plan_corrections(field, doc)
    msg = str(exc.value)
    assert "3 problems" in msg and "nothing sent" in msg
    assert "axis1 correction 20.944 mrad exceeds the maximum 20 mrad" in msg
    assert "H002: parameter set turns the mirror by up to 25.000 mrad" in msg
    assert "'H777' is not in the field config" in msg
    # 1100 steps = 19.199 mrad passes.
    sp["axis1_steps"] = sp["nominal_axis1_steps"] + 1100
    doc["heliostats"][1]["parameters"] = {"axis2_zero_rad": 0.019}
    doc["heliostats"].pop()
    cmds = plan_corrections(field, doc)
    assert [c.kind for c in cmds[:3]] == ["params", "move", "move"]
    assert len(cmds) == 4 * 3


def test_a_refused_batch_puts_nothing_on_the_wire(field):
    bus, _ = _bus(field)
    with bus:
        doc = corrections_for(field, seed=1)
        doc["heliostats"][2]["setpoints"][1]["axis2_steps"] = 10**6
        with pytest.raises(SafetyRefused):
            plan_corrections(field, doc)
    assert bus.stats.frames_in == 0


# --------------------------------------------------------------------------- delivery
def test_apply_corrections_confirms_everything_and_matches_ground_truth(field):
    bus, ctls = _bus(field)
    cmds = plan_corrections(field, corrections_for(field, n_setpoints=3, seed=5))
    with bus, _link(bus) as link:
        outs = Bridge(link).run("b1", "test", cmds)
    res = check_against_truth(outs, cmds, ctls)
    assert res["states"] == {"confirmed": len(cmds)}
    assert res["applied_twice"] == res["applied_wrongly"] == res["final_target_mismatch"] == 0
    # Each controller holds the float32 image of the parameters it was sent.
    from firmware_bridge import registers as R

    for c, cmd in zip(ctls, [c for c in cmds if c.kind == "params"], strict=True):
        assert c.active_params == R.encode_params(cmd.params)


def test_lost_reply_to_an_applied_write_does_not_apply_twice(field):
    bus, ctls = _bus(field)
    with bus, _link(bus) as link:
        br = Bridge(link, retry=RetryPolicy(max_attempts=4, backoff_s=0.0))
        # Drop every reply of the first exchange only: the write is applied, its
        # acknowledgement lost, and the bridge must confirm by read-back, not re-apply.
        orig = bus.handle_frame
        calls = {"n": 0}

        def lossy(raw):
            reply, late = orig(raw)
            calls["n"] += 1
            return (None, 0.0) if calls["n"] == 1 else (reply, late)

        bus.handle_frame = lossy
        out = br.deliver(ActuatorCommand("H001", 1, "move", (10, 20)), 1001)
    assert out.state == "confirmed"
    assert ctls[0].applied_counts[1001] == 1


def test_reliability_small_faulty_bus():
    # The CI-sized version of bench/bridge.py --reliability 10000: 20 controllers, 1 %
    # corrupted and 1 % dropped frames, resets and late replies.
    res = run_reliability(
        300,
        n_controllers=20,
        corrupt_p=0.01,
        drop_p=0.01,
        reset_p=0.01,
        late_p=0.005,
        truncate_p=0.01,
        seed=11,
        timeout_s=0.1,
    )
    assert res["commands"] == 300 and res["unsettled"] == 0
    assert res["applied_twice"] == 0
    assert res["applied_wrongly"] == 0
    assert res["confirmed_not_applied"] == 0
    assert res["final_target_mismatch"] == 0
    # Faults really happened (seeded draws) ...
    assert min(res["bus"][k] for k in ("dropped", "corrupted", "resets", "truncated", "late")) > 0
    # ... and every command ended confirmed or reported failed. With 8 attempts per
    # command nearly all are confirmed; a few may fail on an overloaded host where
    # replies miss the 0.1 s timeout 8 times in a row.
    st = res["states"]
    assert st.get("confirmed", 0) + st.get("failed", 0) + st.get("unreachable", 0) == 300
    assert st.get("confirmed", 0) >= 290


def test_resume_from_journal_skips_settled_and_rechecks_the_in_flight_one(field, tmp_path):
    bus, ctls = _bus(field)
    cmds = plan_corrections(field, corrections_for(field, n_setpoints=2, seed=2))
    jpath = tmp_path / "j.sqlite"
    with bus, _link(bus) as link:
        with Journal(jpath) as j:
            entries = j.create_batch(
                "k",
                "test",
                [(c.heliostat, bus.port, c.address, c.kind, c.payload(), None) for c in cmds],
            )
            br = Bridge(link, j)
            # Simulate a crash: the first 4 commands settled, the 5th applied on the
            # controller but its outcome never journaled.
            for e, c in zip(entries[:5], cmds[:5], strict=True):
                out = br.deliver(c, e.command_id)
                if e.seq < 4:
                    j.mark(e.row_id, out.state, out.attempts)
        with Journal(jpath) as j:
            outs = Bridge(link, j).run("k", "test", cmds)
    # Per heliostat: parameter set, move, move. The first heliostat's params and last
    # move are read back (replayed); its first move, overridden by the second, is
    # superseded; the second heliostat's params (the 4th) likewise replayed, and the
    # 5th (applied, never journaled) confirmed by its status read.
    states = [o.state for o in outs]
    assert states == ["confirmed", "superseded"] + ["confirmed"] * (len(cmds) - 2)
    assert [o.replayed for o in outs[:5]] == [True, False, True, True, False]
    assert [o.resumed for o in outs[:5]] == [True] * 5 and not outs[5].resumed
    res = check_against_truth(outs, cmds, ctls)
    assert res["applied_twice"] == 0 and res["applied_wrongly"] == 0


def test_journal_refuses_a_batch_key_with_other_commands(field, tmp_path):
    bus, _ = _bus(field)
    with bus, _link(bus) as link, Journal(tmp_path / "j.sqlite") as j:
        br = Bridge(link, j)
        br.run("same", "t", [ActuatorCommand("H001", 1, "move", (1, 1))])
        with pytest.raises(ActuatorError, match="other commands"):
            br.run("same", "t", [ActuatorCommand("H001", 1, "move", (2, 2))])


def _members(cfg):
    """Every controller on the (one) bus of the field: heliostat id -> address."""
    return {h.id: h.address for h in cfg.heliostats.values()}


def test_broadcast_stow_is_confirmed_per_controller(field):
    bus, ctls = _bus(field, faults=FaultProfile(), seed=0)
    cmds = [ActuatorCommand(h.id, h.address, "stow") for h in field.heliostats.values()]
    with bus, _link(bus) as link:
        outs = Bridge(link).run("stow", "t", cmds, broadcast_stow=True, bus_members=_members(field))
    assert {o.state for o in outs} == {"confirmed"}
    assert len({o.command_id for o in outs}) == 1  # one command id, one broadcast frame
    assert bus.stats.broadcasts == 1
    assert all(c.applied_counts[outs[0].command_id] == 1 for c in ctls)


def test_broadcast_stow_must_cover_the_whole_bus_in_the_library(field, tmp_path):
    # The rule holds for a script calling the library, not only for the CLI: a broadcast
    # that would move controllers outside the batch (unjournaled, unconfirmed) is refused
    # with nothing on the wire and nothing journaled.
    bus, ctls = _bus(field)
    members = _members(field)
    stows = [ActuatorCommand(h, a, "stow") for h, a in members.items()]
    with bus, _link(bus) as link, Journal(tmp_path / "j.sqlite") as j:
        br = Bridge(link, j)
        with pytest.raises(SafetyRefused, match=r"every controller on bus 'bus1' \(H001, H002, "):
            br.run("part", "t", stows[:2], broadcast_stow=True, bus_members=members,
                   bus_name="bus1")  # fmt: skip
        with pytest.raises(SafetyRefused, match="name them"):
            br.run("unnamed", "t", stows, broadcast_stow=True)
        with pytest.raises(SafetyRefused, match="only allowed for stow"):
            move = ActuatorCommand("H001", members["H001"], "move", (1, 1))
            br.run("move", "t", [move, *stows[1:]], broadcast_stow=True, bus_members=members)
        wrong = [ActuatorCommand("H001", 9, "stow"), *stows[1:]]
        with pytest.raises(SafetyRefused, match="H001: address 9 is not its configured address"):
            br.run("addr", "t", wrong, broadcast_stow=True, bus_members=members)
        assert not any(j.has_batch(k) for k in ("part", "unnamed", "move", "addr"))
    assert bus.stats.frames_in == bus.stats.broadcasts == 0
    assert all(not c.applied_counts for c in ctls)


def test_transient_port_fault_is_reopened_and_retried(field):
    from pymodbus.exceptions import ConnectionException

    bus, ctls = _bus(field)
    with bus, _link(bus) as link:
        client = link._client
        orig = client.recv
        fails = {"n": 1}

        def flaky(size):
            if fails["n"]:
                fails["n"] -= 1
                client.close()
                raise ConnectionException("simulated port fault")
            return orig(size)

        client.recv = flaky
        out = Bridge(link).deliver(ActuatorCommand("H002", 2, "move", (5, 6)), 555)
    assert out.state == "confirmed" and out.attempts == 2
    assert ctls[1].applied_counts[555] == 1


# --------------------------------------------------------------------------- transient exceptions
def _answer_exception(ctl, n, code, fcs=(16,), apply=False):
    """Make ``ctl`` answer its next ``n`` requests with function code in ``fcs`` with
    Modbus exception ``code`` (``apply``: execute the request first, as a controller that
    acknowledges a long request does). Returns the counter of exceptions still to come."""
    from pymodbus.pdu import ExceptionResponse

    orig, left = ctl.handle, {"n": n}

    def handle(pdu, broadcast=False):
        if broadcast or pdu.function_code not in fcs or left["n"] <= 0:
            return orig(pdu, broadcast)
        left["n"] -= 1
        if apply:
            orig(pdu, broadcast)
        resp = ExceptionResponse(pdu.function_code, code)
        resp.dev_id = ctl.spec.address
        return resp

    ctl.handle = handle
    return left


def test_busy_controller_is_retried_with_backoff_and_confirmed(field):
    bus, ctls = _bus(field)
    _answer_exception(ctls[1], 2, code=6)  # "server device busy" to the next two writes
    sleeps = []
    with bus, _link(bus) as link:
        out = Bridge(link, sleep=sleeps.append).deliver(
            ActuatorCommand("H002", 2, "move", (5, 6)), 601
        )
    assert out.state == "confirmed" and out.attempts == 3
    # The default policy's back-off before attempts 2 and 3: 0.02 s, then 0.02·2 s.
    assert sleeps == [0.02, 0.04]
    assert ctls[1].applied_counts[601] == 1


def test_acknowledged_command_is_confirmed_by_status_not_sent_twice(field):
    bus, ctls = _bus(field)
    # Exception 5: the controller took the command and is still working on it.
    _answer_exception(ctls[1], 1, code=5, apply=True)
    with bus, _link(bus) as link:
        out = Bridge(link, sleep=lambda s: None).deliver(
            ActuatorCommand("H002", 2, "move", (7, 8)), 602
        )
    assert out.state == "confirmed" and out.attempts == 2
    assert ctls[1].applied_counts[602] == 1
    # Attempt 2 began with a status read that showed the command: no second write.
    assert ctls[1].applied_counts.total() == 1


def test_persistent_busy_ends_failed_and_a_rerun_retries_it(field, tmp_path):
    bus, ctls = _bus(field)
    left = _answer_exception(ctls[1], 10**6, code=6)
    cmds = [ActuatorCommand("H002", 2, "move", (9, 10))]
    retry = RetryPolicy(max_attempts=3)
    with bus, _link(bus) as link:
        j = Journal(tmp_path / "j.sqlite")
        out = Bridge(link, j, retry, sleep=lambda s: None).run("busy", "test", cmds)[0]
        assert (out.state, out.attempts, out.exception_code) == ("failed", 3, 6)
        assert "server device busy" in out.detail
        assert ctls[1].applied_counts.total() == 0
        assert j.entries("busy")[0].state == "failed"
        # The controller is free again: a re-run of the batch sends it (not a final state).
        left["n"] = 0
        out2 = Bridge(link, j, retry, sleep=lambda s: None).run("busy", "test", cmds)[0]
    assert out2.state == "confirmed" and out2.resumed
    assert ctls[1].applied_counts[out2.command_id] == 1


def test_exception_to_a_status_read_is_not_a_rejection_of_the_command(field):
    bus, ctls = _bus(field)
    # The write goes through; the status read after it is refused once (exception 4).
    _answer_exception(ctls[1], 1, code=4, fcs=(3, 4))
    with bus, _link(bus) as link:
        out = Bridge(link, sleep=lambda s: None).deliver(
            ActuatorCommand("H002", 2, "move", (11, 12)), 603
        )
    assert out.state == "confirmed" and out.attempts == 2
    assert ctls[1].applied_counts[603] == 1


@pytest.mark.parametrize("code", [1, 2, 3, 4])
def test_exceptions_1_to_4_to_the_command_write_stay_final(field, code):
    bus, ctls = _bus(field)
    _answer_exception(ctls[1], 10**6, code=code)
    with bus, _link(bus) as link:
        out = Bridge(link, sleep=lambda s: None).deliver(
            ActuatorCommand("H002", 2, "move", (13, 14)), 604
        )
    assert (out.state, out.attempts, out.exception_code) == ("rejected", 1, code)


def test_controller_reject_reason_stays_final(field):
    bus, ctls = _bus(field)
    # Past the controller's own travel limit (safety planning bypassed): exception 3 with
    # reason SETPOINT_OUT_OF_LIMITS, one attempt, no retry.
    with bus, _link(bus) as link:
        out = Bridge(link, sleep=lambda s: None).deliver(
            ActuatorCommand("H002", 2, "move", (0, 10**7)), 605
        )
    assert (out.state, out.attempts, out.exception_code) == ("rejected", 1, 3)
    assert "SETPOINT_OUT_OF_LIMITS" in out.detail


def test_unknown_reject_code_is_recognised_as_a_rejection(field):
    bus, ctls = _bus(field)
    # Firmware newer than this map rejected command 606 with a reason code 99.
    ctls[1].reject_code, ctls[1].rejected_command_id = 99, 606
    with bus, _link(bus) as link:
        out = Bridge(link, sleep=lambda s: None).deliver(
            ActuatorCommand("H002", 2, "move", (15, 16)), 606, check_first=True
        )
    assert out.state == "rejected" and "UNKNOWN(99)" in out.detail
    assert ctls[1].applied_counts[606] == 0  # not re-sent over the rejection


@pytest.mark.parametrize("code", [10, 11])
def test_gateway_exceptions_are_transient_not_rejections(field, code):
    # 10 gateway path unavailable, 11 gateway target failed to respond: a TCP-to-RTU
    # gateway could not reach the controller this time. Retried; only 1-4 reject.
    bus, ctls = _bus(field)
    _answer_exception(ctls[1], 2, code=code)
    with bus, _link(bus) as link:
        out = Bridge(link, sleep=lambda s: None).deliver(
            ActuatorCommand("H002", 2, "move", (17, 18)), 607
        )
    assert out.state == "confirmed" and out.attempts == 3
    assert ctls[1].applied_counts[607] == 1


@pytest.mark.parametrize("code", [10, 11])
def test_persistent_gateway_exception_ends_failed_and_a_rerun_retries(field, tmp_path, code):
    bus, ctls = _bus(field)
    left = _answer_exception(ctls[1], 10**6, code=code)
    cmds = [ActuatorCommand("H002", 2, "move", (19, 20))]
    retry = RetryPolicy(max_attempts=3)
    with bus, _link(bus) as link, Journal(tmp_path / "j.sqlite") as j:
        out = Bridge(link, j, retry, sleep=lambda s: None).run("gw", "test", cmds)[0]
        assert (out.state, out.attempts, out.exception_code) == ("failed", 3, code)
        left["n"] = 0
        out2 = Bridge(link, j, retry, sleep=lambda s: None).run("gw", "test", cmds)[0]
    assert out2.state == "confirmed"
    assert ctls[1].applied_counts[out2.command_id] == 1
