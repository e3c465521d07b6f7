"""Delivery to every bus at once (:mod:`firmware_bridge.fleet`): the same journal and
controller state as bus-after-bus delivery, a dead bus blocks nobody, an interrupted
upload resumes on every bus, and the shared journal stays whole under threads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from firmware_bridge.delivery import ActuatorCommand, Bridge, RetryPolicy
from firmware_bridge.errors import ControllerTimeout
from firmware_bridge.fleet import BusJob, deliver_buses
from firmware_bridge.journal import DONE_STATES, Journal, peek_counts
from firmware_bridge.safety import plan_corrections
from firmware_bridge.transport import ModbusLink
from heliostat.cli import main
from heliostat.config import load_field
from heliostat.kinematics import error_names
from sim.controller_fixtures import corrections_for, field_toml_buses
from sim.controllers import ControllerModel, EmulatedBus, specs_for_field

PER_BUS = (3, 2, 4)  # heliostats on bus1, bus2, bus3 (addresses 1..n on each)


class Plant:
    """Emulated controllers on one pty bus per bus of a field config."""

    def __init__(self, tmp_path, per_bus=PER_BUS, timing=False, name="field.toml") -> None:
        self.stack = contextlib.ExitStack()
        names = [f"bus{k + 1}" for k in range(len(per_bus))]
        probe = load_field(_write(tmp_path / name, field_toml_buses(per_bus)))
        self.ctls = {
            b: [
                ControllerModel(s, param_names=error_names(s.drive))
                for s in specs_for_field(probe, b)
            ]
            for b in names
        }
        self.buses = {
            b: self.stack.enter_context(EmulatedBus(self.ctls[b], timing=timing)) for b in names
        }
        self.fpath = _write(
            tmp_path / name,
            field_toml_buses(per_bus, [self.buses[b].port for b in names], timeout_s=0.05),
        )
        self.cfg = load_field(self.fpath)

    def close(self) -> None:
        self.stack.close()

    def controller(self, heliostat: str) -> ControllerModel:
        h = self.cfg.heliostats[heliostat]
        return next(c for c in self.ctls[h.bus] if c.spec.address == h.address)


def _write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def plant(tmp_path):
    p = Plant(tmp_path)
    yield p
    p.close()


def _commands(cfg, n_setpoints=3, seed=1) -> dict[str, tuple[ActuatorCommand, ...]]:
    """A parameter set and ``n_setpoints`` moves per heliostat, grouped by bus."""
    doc = corrections_for(cfg, n_setpoints=n_setpoints, seed=seed)
    cmds = plan_corrections(cfg, doc, params=True, setpoints="all")
    out: dict[str, list] = {}
    for c in cmds:
        out.setdefault(cfg.heliostats[c.heliostat].bus, []).append(c)
    return {b: tuple(cs) for b, cs in out.items()}


def _connect(port, journal, link_cls=ModbusLink, attempts=3):
    @contextlib.contextmanager
    def connect():
        with link_cls(port, timeout_s=0.05, inter_frame_s=0) as link:
            yield Bridge(link, journal, RetryPolicy(max_attempts=attempts), sleep=lambda s: None)

    return connect


def _jobs(plant, journal, cmds, link_cls=None, ports=None):
    link_cls = link_cls or {}
    ports = ports or {}
    return [
        BusJob(
            b,
            ports.get(b, plant.buses[b].port),
            f"upload|{b}",
            "test",
            cs,
            _connect(ports.get(b, plant.buses[b].port), journal, link_cls.get(b, ModbusLink)),
        )
        for b, cs in cmds.items()
    ]


def _journal_rows(path, port_to_bus) -> list[tuple]:
    """The journal's rows without what differs between two runs by design (row ids,
    command ids from a random start, times, pty paths: the bus name instead)."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT batch_key, seq, heliostat, port, address, kind, payload, state, attempts,"
            " exception_code, detail FROM commands ORDER BY batch_key, seq"
        ).fetchall()
    return [(*r[:3], port_to_bus[r[3]], *r[4:]) for r in rows]


def _controller_state(plant) -> dict:
    """What each controller holds and what it applied, command ids aside."""
    return {
        (b, c.spec.address): (
            tuple(c.target_steps),
            tuple(c.active_params),
            [(code, sp) for _, code, sp in c.applied],
        )
        for b, cs in plant.ctls.items()
        for c in cs
    }


def _ports(plant):
    return {bus.port: b for b, bus in plant.buses.items()}


# --------------------------------------------------------------------------- equality
def test_parallel_delivery_equals_bus_after_bus(tmp_path):
    seq_plant = Plant(tmp_path, name="seq.toml")
    par_plant = Plant(tmp_path, name="par.toml")
    try:
        cmds = _commands(seq_plant.cfg)
        assert cmds == _commands(par_plant.cfg)  # the same upload for both plants
        # Bus after bus: today's loop.
        with Journal(tmp_path / "seq.sqlite") as j:
            seq = {}
            for b, cs in cmds.items():
                with _connect(seq_plant.buses[b].port, j)() as br:
                    seq[b] = br.run(f"upload|{b}", "test", cs)
        # Every bus at once.
        with Journal(tmp_path / "par.sqlite") as j:
            par = deliver_buses(_jobs(par_plant, j, cmds))
        assert [r.bus for r in par] == list(cmds)
        for r in par:
            assert r.error == "" and r.missing == 0
            assert [o.state for o in r.outcomes] == [o.state for o in seq[r.bus]]
            assert set(r.counts) == {"confirmed"}
        assert _journal_rows(tmp_path / "par.sqlite", _ports(par_plant)) == _journal_rows(
            tmp_path / "seq.sqlite", _ports(seq_plant)
        )
        assert _controller_state(par_plant) == _controller_state(seq_plant)
        # Each controller holds its last setpoint; nothing applied twice.
        for cs in cmds.values():
            for c in cs:
                ctl = par_plant.controller(c.heliostat)
                last = [x for x in cs if x.heliostat == c.heliostat and x.kind == "move"][-1]
                assert tuple(ctl.target_steps) == last.setpoints_steps
                assert max(ctl.applied_counts.values()) == 1
    finally:
        seq_plant.close()
        par_plant.close()


def test_two_jobs_for_one_bus_are_refused(plant, tmp_path):
    cmds = _commands(plant.cfg)
    with Journal(":memory:") as j:
        jobs = _jobs(plant, j, cmds)
        with pytest.raises(ValueError, match="two delivery jobs for bus 'bus1'"):
            deliver_buses([jobs[0], jobs[0]])
    assert sum(bus.stats.frames_in for bus in plant.buses.values()) == 0


# --------------------------------------------------------------------------- failures
def test_a_hung_bus_and_a_dead_port_do_not_block_the_others(plant, tmp_path):
    cmds = _commands(plant.cfg, n_setpoints=2)
    others_done = threading.Event()
    waited: list[bool] = []
    finished: dict[str, int] = {}

    class HungLink(ModbusLink):
        """bus2: its first controller never answers, and the first request hangs until
        bus1 has delivered everything (a bus-after-bus delivery would never get there)."""

        def _hold(self):
            if not waited:
                waited.append(others_done.wait(60))

        def read_registers(self, address, start, count, input_regs=False):
            self._hold()
            if address == 1:
                raise ControllerTimeout("simulated: controller 1 is dead")
            return super().read_registers(address, start, count, input_regs)

        def write_registers(self, address, start, values):
            self._hold()
            if address == 1:
                raise ControllerTimeout("simulated: controller 1 is dead")
            return super().write_registers(address, start, values)

    def progress(bus, o, i, n):
        finished[bus] = i
        if bus == "bus1" and i == n:
            others_done.set()

    with Journal(tmp_path / "j.sqlite") as j:
        jobs = _jobs(
            plant, j, cmds, link_cls={"bus2": HungLink}, ports={"bus3": str(tmp_path / "no-tty")}
        )
        res = {r.bus: r for r in deliver_buses(jobs, progress)}
    assert waited == [True]  # bus1 finished while bus2 was hung
    assert res["bus1"].error == "" and set(res["bus1"].counts) == {"confirmed"}
    # bus2: the dead controller's commands end unreachable, the other one's confirmed.
    b2 = res["bus2"]
    assert b2.error == "" and b2.missing == 0
    assert {o.state for o in b2.outcomes if o.address == 1} == {"unreachable"}
    assert {o.state for o in b2.outcomes if o.address == 2} == {"confirmed"}
    # bus3: its port does not open; reported on that bus, nothing delivered there.
    b3 = res["bus3"]
    assert "cannot open serial port" in b3.error and b3.missing == b3.planned == len(cmds["bus3"])
    assert b3.outcomes == () and plant.buses["bus3"].stats.frames_in == 0
    assert finished == {"bus1": len(cmds["bus1"]), "bus2": len(cmds["bus2"])}


def test_cli_reports_each_bus_and_a_failed_bus_does_not_stop_the_others(plant, tmp_path, capsys):
    corr = _write(tmp_path / "c.json", json.dumps(corrections_for(plant.cfg, n_setpoints=2)))
    # bus3's port disappears before the upload
    text = plant.fpath.read_text().replace(plant.buses["bus3"].port, str(tmp_path / "gone"))
    fpath = _write(tmp_path / "field2.toml", text)
    argv = ["bridge", "apply", str(corr), "--field", str(fpath), "--json", "--yes"]
    rc = main([*argv, "--journal", str(tmp_path / "j.sqlite")])
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    buses = {b["bus"]: b for b in doc["buses"]}
    assert rc == 1
    assert buses["bus1"]["counts"] == {"confirmed": 3 * 3} and buses["bus1"]["error"] == ""
    assert buses["bus2"]["counts"] == {"confirmed": 2 * 3} and buses["bus2"]["missing"] == 0
    assert buses["bus3"]["missing"] == 4 * 3 and "cannot open serial port" in buses["bus3"]["error"]
    assert "bus 'bus3'" in cap.err and "stopped after 0 of 12 command(s)" in cap.err
    # The port is back: a re-run replays bus1 and bus2 (read back, nothing sent) and
    # delivers bus3.
    writes = plant.buses["bus1"].stats.by_kind[16]
    rc = main([*argv[:4], str(plant.fpath), "--json", "--journal", str(tmp_path / "j.sqlite")])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0, doc["buses"]
    assert all(b["missing"] == 0 and b["error"] == "" for b in doc["buses"])
    assert {o["state"] for o in doc["outcomes"]} <= set(DONE_STATES)
    assert plant.buses["bus1"].stats.by_kind[16] == writes
    assert all(o["replayed"] or o["state"] == "superseded" for o in doc["outcomes"][:15])


# --------------------------------------------------------------------------- resume
def test_an_upload_stopped_mid_way_on_every_bus_resumes_each_bus(plant, tmp_path):
    cmds = _commands(plant.cfg, n_setpoints=4)
    stop = threading.Event()
    started = {b: threading.Event() for b in cmds}

    def gated(bus):
        class GatedLink(ModbusLink):
            """Holds the bus's next write, once it has ended two commands, until the stop
            is set: no bus can finish before every bus has started, however the threads
            are scheduled on a loaded machine (the progress hook runs under the fleet's
            lock, so the wait belongs here, in the bus's own thread)."""

            def write_registers(self, address, start, values):
                if started[bus].is_set():
                    assert stop.wait(60), "the other buses never reached their second command"
                return super().write_registers(address, start, values)

        return GatedLink

    def progress(bus, o, i, n):
        if i >= 2:
            started[bus].set()
        if all(e.is_set() for e in started.values()):
            stop.set()  # every bus has started: stop them all mid-way

    jpath = tmp_path / "j.sqlite"
    with Journal(jpath) as j:
        jobs = _jobs(plant, j, cmds, link_cls={b: gated(b) for b in cmds})
        first = deliver_buses(jobs, progress, stop)
    assert all(r.error == "stopped" for r in first)
    assert all(0 < len(r.outcomes) < r.planned for r in first)
    for r in first:  # journaled up to where each bus stopped, the rest pending
        with Journal(jpath) as j:
            states = [e.state for e in j.entries(f"upload|{r.bus}")]
        assert states[: len(r.outcomes)] == ["confirmed"] * len(r.outcomes)
        assert set(states[len(r.outcomes) :]) == {"pending"}
    with Journal(jpath) as j:
        again = deliver_buses(_jobs(plant, j, cmds))
    for r, f in zip(again, first, strict=True):
        assert r.error == "" and r.missing == 0
        assert {o.state for o in r.outcomes} <= set(DONE_STATES)
        assert all(o.resumed for o in r.outcomes[: len(f.outcomes)])  # read back, not re-sent
        assert not any(o.resumed for o in r.outcomes[len(f.outcomes) + 1 :])
    # Ground truth: every command applied exactly once, with the journal's ids, and each
    # controller holds its last setpoint and its parameter set.
    with Journal(jpath) as j:
        journaled = {(b, e.address, e.command_id) for b in cmds for e in j.entries(f"upload|{b}")}
    applied = [
        (b, c.spec.address, cid)
        for b, cs in plant.ctls.items()
        for c in cs
        for cid, _, _ in c.applied
    ]
    assert len(applied) == len(set(applied)) == sum(len(cs) for cs in cmds.values())
    assert set(applied) == journaled
    for cs in cmds.values():
        for c in cs:
            last = [x for x in cs if x.heliostat == c.heliostat and x.kind == "move"][-1]
            assert tuple(plant.controller(c.heliostat).target_steps) == last.setpoints_steps


def test_cli_killed_mid_upload_over_three_buses_resumes_exactly_once(tmp_path):
    # The buses model 115200 baud, so the upload takes a while and the kill lands mid-way.
    plant = Plant(tmp_path, per_bus=(5, 5, 5), timing=True)
    try:
        corr = _write(
            tmp_path / "c.json", json.dumps(corrections_for(plant.cfg, n_setpoints=20, seed=3))
        )
        n_total = 15 * (1 + 20)  # about 2 s at 115200 baud: the kill lands mid-way
        jpath = tmp_path / "journal.sqlite"
        argv = [sys.executable, "-m", "heliostat.cli", "bridge", "apply", str(corr)]
        argv += ["--field", str(plant.fpath), "--journal", str(jpath), "--json"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 120
        while peek_counts(jpath).get("confirmed", 0) < 30:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "bridge made no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = peek_counts(jpath)
        assert 30 <= before.get("confirmed", 0) < n_total, before
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
    finally:
        plant.close()
    assert sum(report["counts"].values()) == n_total
    assert set(report["counts"]) <= set(DONE_STATES)
    assert [b["bus"] for b in report["buses"]] == ["bus1", "bus2", "bus3"]
    applied = [
        (b, c.spec.address, cid)
        for b, cs in plant.ctls.items()
        for c in cs
        for cid, _, _ in c.applied
    ]
    assert len(applied) == len(set(applied)) == n_total  # nothing applied twice
    port_bus = {bus.port: b for b, bus in plant.buses.items()}
    with sqlite3.connect(jpath) as db:
        journaled = {
            (port_bus[p], a, cid)
            for p, a, cid in db.execute("SELECT port, address, command_id FROM commands")
        }
    assert set(applied) == journaled


# --------------------------------------------------------------------------- journal
def test_shared_journal_stays_whole_under_threads(tmp_path):
    jpath = tmp_path / "j.sqlite"
    n_threads, n_batches, n_cmds = 8, 5, 40
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    with Journal(jpath) as j:
        with sqlite3.connect(jpath) as db:
            (first_id,) = db.execute(
                "SELECT value FROM meta WHERE key = 'next_command_id'"
            ).fetchone()

        def work(t: int) -> None:
            try:
                start.wait()
                for b in range(n_batches):
                    rows = [
                        (f"H{t}-{k}", f"port{t}", 1 + k % 247, "move", {"k": k}, None)
                        for k in range(n_cmds)
                    ]
                    entries = j.create_batch(f"t{t}b{b}", "test", rows)
                    for e in entries:
                        if e.seq % 7 == 0:
                            e = j.reissue(e.row_id, "again")
                        j.mark(e.row_id, "confirmed", 1, None, f"t{t}")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert j.counts() == {"confirmed": n_threads * n_batches * n_cmds}
        for t in range(n_threads):
            for b in range(n_batches):
                es = j.entries(f"t{t}b{b}")
                assert [e.seq for e in es] == list(range(n_cmds))
                assert {e.port for e in es} == {f"port{t}"} and {e.detail for e in es} == {f"t{t}"}
    with sqlite3.connect(jpath) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        ids = [r[0] for r in db.execute("SELECT command_id FROM commands")]
        n_reissued = n_threads * n_batches * len(range(0, n_cmds, 7))
        # every id unique, and ids come from one counter: none lost, none given twice
        assert len(set(ids)) == len(ids) == n_threads * n_batches * n_cmds
        (nxt,) = db.execute("SELECT value FROM meta WHERE key = 'next_command_id'").fetchone()
        n_allocated = n_threads * n_batches * n_cmds + n_reissued
        assert int(nxt) == int(first_id) + n_allocated
        assert all(int(first_id) <= i < int(nxt) for i in ids)


def test_ctrl_c_lets_every_bus_finish_its_command_and_the_rerun_resumes(plant, tmp_path):
    cmds = _commands(plant.cfg, n_setpoints=4)
    sent = []

    def progress(bus, o, i, n):
        sent.append(bus)
        if len(sent) == 5:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C reaches the main thread

    jpath = tmp_path / "j.sqlite"
    with Journal(jpath) as j, pytest.raises(KeyboardInterrupt):
        deliver_buses(_jobs(plant, j, cmds), progress)
    with Journal(jpath) as j:
        states = {b: [e.state for e in j.entries(f"upload|{b}")] for b in cmds}
    # every bus stopped between commands: nothing half-done, each batch resumable
    assert all(set(s) <= {"confirmed", "pending"} for s in states.values())
    assert 0 < sum(s.count("confirmed") for s in states.values()) < sum(map(len, cmds.values()))
    with Journal(jpath) as j:
        again = deliver_buses(_jobs(plant, j, cmds))
    assert all(r.error == "" and set(r.counts) <= set(DONE_STATES) for r in again)
    applied = [cid for cs in plant.ctls.values() for c in cs for cid, _, _ in c.applied]
    assert len(applied) == len(set(applied)) == sum(len(cs) for cs in cmds.values())


def test_progress_line_counts_commands_and_finished_buses(capsys):
    from types import SimpleNamespace

    from heliostat.commands.bridge import _progress_line

    jobs = [
        SimpleNamespace(bus=b, port=f"/dev/{b}", commands=(0,) * n) for b, n in (("a", 2), ("b", 1))
    ]
    progress = _progress_line(jobs)
    for bus, i, n in (("a", 1, 2), ("b", 1, 1), ("a", 2, 2)):
        progress(bus, None, i, n)
    err = capsys.readouterr().err
    assert err.endswith("\r3/3 commands; 2/2 buses done\n")
    assert "\n" not in err[:-1]  # one line, rewritten in place
