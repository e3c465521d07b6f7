"""Resuming a batch never leaves a heliostat on a stale setpoint: an unsettled command
that a later command for the same controller has overridden ends ``superseded``."""

from __future__ import annotations

import pytest

from firmware_bridge.delivery import ActuatorCommand, Bridge, Outcome, RetryPolicy
from firmware_bridge.errors import ControllerTimeout
from firmware_bridge.journal import DONE_STATES, FINAL_STATES, Journal
from firmware_bridge.transport import ModbusLink
from heliostat.config import load_field
from heliostat.kinematics import error_names
from sim.controller_fixtures import field_toml
from sim.controllers import ControllerModel, EmulatedBus, specs_for_field

A, B = (1000, 45000), (2000, 46000)  # two setpoints in time order: B is the latest


class FlakyLink(ModbusLink):
    """Loses the command frame of move A before it reaches the line; after move B's
    write reaches the controller (``blackout_after_b``), every reply is lost."""

    blackout_after_b = False
    blackout = False

    def write_registers(self, address, start, values):
        if self.blackout:
            raise ControllerTimeout("simulated: reply lost")
        if start == 64 and list(values[4:]) == [0, A[0], 0, A[1]]:
            raise ControllerTimeout("simulated: frame lost")
        super().write_registers(address, start, values)
        if self.blackout_after_b and start == 64 and list(values[4:]) == [0, B[0], 0, B[1]]:
            self.blackout = True
            raise ControllerTimeout("simulated: reply lost")

    def read_registers(self, address, start, count, input_regs=False):
        if self.blackout:
            raise ControllerTimeout("simulated: reply lost")
        return super().read_registers(address, start, count, input_regs)


@pytest.fixture
def plant(tmp_path):
    p = tmp_path / "f.toml"
    p.write_text(field_toml(1))
    cfg = load_field(p)
    ctls = [ControllerModel(s, param_names=error_names(s.drive)) for s in specs_for_field(cfg)]
    with EmulatedBus(ctls, timing=False) as bus, Journal(tmp_path / "j.sqlite") as j:
        yield bus, ctls[0], j


def _bridge(link, j, attempts=5):
    return Bridge(link, j, RetryPolicy(max_attempts=attempts), sleep=lambda s: None)


def test_failed_move_with_a_later_confirmed_move_is_superseded_not_resent(plant):
    bus, ctl, j = plant
    cmds = [ActuatorCommand("H001", 1, "move", A), ActuatorCommand("H001", 1, "move", B)]
    with FlakyLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        first = _bridge(link, j, attempts=2).run("k", "t", cmds)
    assert [o.state for o in first] == ["failed", "confirmed"]
    assert ctl.target_steps == list(B)
    n_applied = len(ctl.applied)
    with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        again = _bridge(link, j).run("k", "t", cmds)
    assert [o.state for o in again] == ["superseded", "confirmed"]
    assert f"superseded by command {first[1].command_id}" in again[0].detail
    assert ctl.target_steps == list(B)  # not back on the stale A
    assert len(ctl.applied) == n_applied  # nothing re-sent
    assert [e.state for e in j.entries("k")] == ["superseded", "confirmed"]
    # A third run finds everything final, reads B back and sends nothing.
    writes = bus.stats.by_kind[16]
    with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        third = _bridge(link, j).run("k", "t", cmds)
    assert [o.state for o in third] == ["superseded", "confirmed"]
    assert third[1].replayed
    assert bus.stats.by_kind[16] == writes
    assert again[0].raise_for_state() is again[0]  # superseded is done, not an error


def test_later_move_applied_with_lost_replies_supersedes_the_failed_earlier_one(plant):
    # A never reached the controller; B was applied but all its replies were lost, so
    # both ended unsettled. Re-sending A on resume would move the heliostat back to A,
    # and B's re-send would then be ignored as a repeat of an applied id: stale for good.
    bus, ctl, j = plant
    cmds = [ActuatorCommand("H001", 1, "move", A), ActuatorCommand("H001", 1, "move", B)]
    with FlakyLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        link.blackout_after_b = True
        first = _bridge(link, j, attempts=2).run("k", "t", cmds)
    assert [o.state for o in first] == ["failed", "unreachable"]
    assert ctl.target_steps == list(B) and ctl.last_command_id == first[1].command_id
    with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        again = _bridge(link, j).run("k", "t", cmds)
    assert [o.state for o in again] == ["superseded", "confirmed"]
    assert ctl.target_steps == list(B)
    assert first[0].command_id not in ctl.applied_counts  # A was never applied
    assert ctl.applied_counts[first[1].command_id] == 1


def test_a_later_move_does_not_supersede_a_parameter_set(plant):
    bus, ctl, j = plant
    params = tuple(1e-4 for _ in error_names("azel"))
    cmds = [
        ActuatorCommand("H001", 1, "params", params=params),
        ActuatorCommand("H001", 1, "move", B),
    ]

    class LoseParams(ModbusLink):
        def write_registers(self, address, start, values):
            if start == 128:
                raise ControllerTimeout("simulated: frame lost")
            return super().write_registers(address, start, values)

    with LoseParams(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        first = _bridge(link, j, attempts=1).run("k", "t", cmds)
    assert [o.state for o in first] == ["unreachable", "confirmed"]
    with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        again = _bridge(link, j).run("k", "t", cmds)
    assert [o.state for o in again] == ["confirmed", "confirmed"]
    assert ctl.param_set_id == first[0].command_id


def test_superseded_is_a_final_done_state():
    assert "superseded" in FINAL_STATES and "superseded" in DONE_STATES
    o = Outcome("H001", 1, "move", 7, "superseded", 1, detail="superseded by command 8")
    assert o.raise_for_state() is o


def test_rerun_after_the_controller_was_replaced_sends_again_under_new_ids(plant):
    # A journal entry from an earlier run is not a confirmation of the controller's
    # state now: a replacement controller (PARAM_SET_ID 0, at its stow) gets the batch's
    # results again, under fresh command ids.
    bus, ctl, j = plant
    params = tuple(1e-4 for _ in error_names("azel"))
    cmds = [
        ActuatorCommand("H001", 1, "params", params=params),
        ActuatorCommand("H001", 1, "move", A),
        ActuatorCommand("H001", 1, "move", B),
    ]
    with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        first = _bridge(link, j).run("k", "t", cmds)
    assert [o.state for o in first] == ["confirmed"] * 3
    new = ControllerModel(ctl.spec, param_names=error_names("azel"))
    bus.controllers[1] = new
    assert new.param_set_id == 0 and new.target_steps != list(B)
    with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        again = _bridge(link, j).run("k", "t", cmds)
    assert [o.state for o in again] == ["confirmed", "superseded", "confirmed"]
    assert not any(o.replayed for o in again)
    assert again[0].command_id != first[0].command_id
    assert again[2].command_id != first[2].command_id
    assert "not held now" in again[2].detail
    # The new controller was really given the parameter set and the latest setpoint.
    assert new.param_set_id == again[0].command_id
    assert new.target_steps == list(B)
    assert sorted(new.applied_counts.values()) == [1, 1]
    # A third run reads the controller back, finds both results held, sends nothing.
    writes = bus.stats.by_kind[16]
    with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        third = _bridge(link, j).run("k", "t", cmds)
    assert [(o.state, o.replayed) for o in third] == [
        ("confirmed", True),
        ("superseded", False),
        ("confirmed", True),
    ]
    assert bus.stats.by_kind[16] == writes


def test_rerun_with_an_unreachable_controller_does_not_report_confirmed(plant):
    bus, ctl, j = plant
    cmds = [ActuatorCommand("H001", 1, "move", B)]
    with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        assert _bridge(link, j).run("k", "t", cmds)[0].state == "confirmed"
    del bus.controllers[1]  # the controller is off the bus now
    with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        (out,) = _bridge(link, j).run("k", "t", cmds)
    assert out.state == "unreachable" and "not verified now" in out.detail
    assert j.entries("k")[0].state == "confirmed"  # the next run reads back again


class GarbledReplies(ModbusLink):
    """Every write reaches the controller and is applied, but every reply (to writes and
    reads) arrives garbled: the bridge sees only timeouts."""

    def write_registers(self, address, start, values):
        super().write_registers(address, start, values)
        raise ControllerTimeout("simulated: garbled reply (CRC error)")

    def read_registers(self, address, start, count, input_regs=False):
        raise ControllerTimeout("simulated: garbled reply (CRC error)")


def test_moves_applied_before_a_later_parameter_upload_are_confirmed_by_state(plant):
    # Moves A, B were applied but every reply was garbled; then a parameter upload (its
    # own batch) moved LAST_CMD_ID on. The controller holds B's targets: a re-run must
    # settle the batch (A superseded, B confirmed) instead of failing it forever.
    bus, ctl, j = plant
    moves = [ActuatorCommand("H001", 1, "move", A), ActuatorCommand("H001", 1, "move", B)]
    with GarbledReplies(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        first = _bridge(link, j, attempts=2).run("moves", "t", moves)
    assert {o.state for o in first} <= {"failed", "unreachable"}
    assert ctl.target_steps == list(B)
    params = (
        ActuatorCommand("H001", 1, "params", params=tuple(1e-4 for _ in error_names("azel"))),
    )
    with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        (p,) = _bridge(link, j).run("params", "t", params)
    assert p.state == "confirmed" and ctl.last_command_id == p.command_id
    for _ in range(2):  # and it stays settled on a further run
        with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
            again = _bridge(link, j).run("moves", "t", moves)
        assert [o.state for o in again] == ["superseded", "confirmed"]
        assert ctl.target_steps == list(B)
    assert max(ctl.applied_counts.values()) == 1


def test_a_resumed_move_whose_repeat_is_ignored_is_sent_under_a_new_id(plant):
    # Move A was applied (replies garbled); the heliostat was then moved elsewhere by
    # another batch. A re-send of A's id is ignored as a repeat, so the bridge gives A a
    # new command id and the controller holds A again.
    bus, ctl, j = plant
    with GarbledReplies(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        (first,) = _bridge(link, j, attempts=1).run(
            "a", "t", [ActuatorCommand("H001", 1, "move", A)]
        )
    assert first.state == "unreachable" and ctl.target_steps == list(A)
    with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0) as link:
        _bridge(link, j).run("b", "t", [ActuatorCommand("H001", 1, "move", B)])
        (again,) = _bridge(link, j).run("a", "t", [ActuatorCommand("H001", 1, "move", A)])
    assert again.state == "confirmed" and again.command_id != first.command_id
    assert f"command {first.command_id} was ignored as a repeat" in again.detail
    assert ctl.target_steps == list(A) and ctl.last_command_id == again.command_id
