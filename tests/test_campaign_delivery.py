"""The campaign's corrections go to every bus at once; a bus that fails marks its own
corrections failed and no other bus's."""

from __future__ import annotations

import functools
import types

import pytest

from firmware_bridge import registers as R
from firmware_bridge.delivery import ActuatorCommand, Bridge, RetryPolicy
from firmware_bridge.errors import PortError
from firmware_bridge.journal import Journal
from firmware_bridge.transport import ModbusLink
from heliostat.calibration.fit import FitResult
from heliostat.campaign.history import History
from heliostat.campaign.runner import CampaignRunner
from heliostat.kinematics import KinematicErrors, error_names
from sim.controllers import ControllerModel, ControllerSpec, EmulatedBus

NOW = "2026-06-21T12:00:00Z"
PARAMS = tuple(1e-4 * (k + 1) for k in range(len(error_names("azel"))))


class DiesOnSecond(ModbusLink):
    """A port that fails for good (it cannot be reopened) at the second controller."""

    def write_registers(self, address, start, values):
        if address == 2:
            raise PortError(f"serial port {self.port!r} failed: device disconnected")
        return super().write_registers(address, start, values)

    def reopen(self):
        raise PortError(f"cannot open serial port {self.port!r}: device disconnected")


class Pool:
    """BusPool's interface: bus1 healthy, bus2's port dies mid-way, bus3 never opens."""

    def __init__(self, buses, journal):
        self.buses, self.journal, self.links = buses, journal, []

    def bridge(self, bus):
        if bus == "bus3":
            raise PortError("cannot open serial port '/dev/ttyUSB3': no such device")
        cls = DiesOnSecond if bus == "bus2" else ModbusLink
        link = cls(self.buses[bus].port, timeout_s=0.05, inter_frame_s=0).open()
        self.links.append(link)
        return Bridge(link, self.journal, RetryPolicy(max_attempts=2), sleep=lambda s: None)

    def port(self, bus):
        return f"port-of-{bus}"


@pytest.fixture
def setup(tmp_path):
    ctls = {
        b: [
            ControllerModel(ControllerSpec(address=a), param_names=error_names("azel"))
            for a in (1, 2)
        ]
        for b in ("bus1", "bus2")
    }
    with (
        EmulatedBus(ctls["bus1"], timing=False) as b1,
        EmulatedBus(ctls["bus2"], timing=False) as b2,
        Journal(tmp_path / "j.sqlite") as j,
        History(tmp_path / "h.sqlite") as hist,
    ):
        pool = Pool({"bus1": b1, "bus2": b2}, j)
        yield ctls, pool, hist
        for link in pool.links:
            link.close()


def _fit(hid):
    e = KinematicErrors.from_dict("azel", dict(zip(error_names("azel"), PARAMS, strict=True)))
    names = error_names("azel")
    return FitResult(hid, "azel", names, e, {n: 1e-5 for n in names}, True, n_points=12)


def test_each_bus_reports_its_own_failure(setup):
    ctls, pool, hist = setup
    by_bus = {}
    for k, bus in enumerate(("bus1", "bus2", "bus3")):
        for a in (1, 2):
            hid = f"H{k}{a}"
            fid = hist.add_fit(_fit(hid), NOW, 1)
            cid = hist.propose(fid, hid, NOW)
            f = {"id": fid, "heliostat_id": hid}
            cmd = ActuatorCommand(hid, a, "params", params=PARAMS)
            by_bus.setdefault(bus, []).append((cid, f, [cmd]))
    lines: list[str] = []
    runner = types.SimpleNamespace(buses=pool, history=hist, log=lines.append)
    runner._failed = functools.partial(CampaignRunner._failed, runner)
    result = {"sent": {}}
    CampaignRunner._deliver(runner, by_bus, NOW, result)
    assert result["sent"] == {
        "H01": "confirmed",
        "H02": "confirmed",
        "H11": "confirmed",  # bus2 delivered its first controller before its port died
        "H12": "failed",
        "H21": "failed",  # bus3 never opened
        "H22": "failed",
    }
    states = {c["heliostat_id"]: (c["state"], c["detail"]) for c in hist.corrections()}
    assert {h: s for h, (s, _) in states.items()} == {
        "H01": "sent",
        "H02": "sent",
        "H11": "sent",
        "H12": "failed",
        "H21": "failed",
        "H22": "failed",
    }
    assert "device disconnected" in states["H12"][1]
    assert "no such device" in states["H21"][1]
    # Ground truth: the controllers of bus1 and the first of bus2 hold the set.
    for c in (*ctls["bus1"], ctls["bus2"][0]):
        assert c.param_set_id != 0 and c.active_params == R.encode_params(PARAMS)
    assert ctls["bus2"][1].param_set_id == 0
    # a delivery row for each command with an outcome (H12's had none: its port died)
    assert [d["heliostat_id"] for d in hist.deliveries()] == ["H01", "H02", "H11"]
    assert any("bus bus2" in line and "stopped" in line for line in lines)
    assert any(line.startswith("bus bus1") and "2 confirmed" in line for line in lines)
    assert any(line.startswith("bus bus2") and "1 confirmed" in line for line in lines)
    assert any(line.startswith("bus bus3: not opened, 2 correction(s) failed") for line in lines)
