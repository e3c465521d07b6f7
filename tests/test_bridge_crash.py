"""A bridge killed with SIGKILL mid-batch resumes from its journal and applies nothing twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from firmware_bridge.journal import peek_counts
from heliostat.config import load_field
from heliostat.kinematics import error_names
from sim.controller_fixtures import corrections_for, field_toml
from sim.controllers import ControllerModel, EmulatedBus, specs_for_field


def test_sigkill_mid_batch_then_restart_completes_exactly_once(tmp_path):
    fpath = tmp_path / "field.toml"
    fpath.write_text(field_toml(20))
    cfg = load_field(fpath)
    ctls = [ControllerModel(s, param_names=error_names(s.drive)) for s in specs_for_field(cfg)]
    corr = tmp_path / "corrections.json"
    corr.write_text(json.dumps(corrections_for(cfg, n_setpoints=8, seed=4)))
    n_total = 20 * (1 + 8)
    jpath = tmp_path / "journal.sqlite"
    # The bus models 115200 baud, so the batch takes seconds and the kill lands mid-run.
    with EmulatedBus(ctls, timing=True) as bus:
        argv = [
            sys.executable,
            "-m",
            "heliostat.cli",
            "bridge",
            "apply",
            str(corr),
            "--field",
            str(fpath),
            "--port",
            bus.port,
            "--journal",
            str(jpath),
            "--json",
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 60
        while peek_counts(jpath).get("confirmed", 0) < 40:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "bridge made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        before = peek_counts(jpath)
        assert 40 <= before.get("confirmed", 0) < n_total, before
        applied_before = sum(len(c.applied) for c in ctls)

        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)

    # A move confirmed before the kill and overridden by a later move of the batch for
    # the same controller cannot be read back (the controller holds the later one): it
    # ends superseded; the latest confirmed one of each controller is read back.
    counts = report["counts"]
    assert set(counts) <= {"confirmed", "superseded"}
    assert counts["confirmed"] + counts.get("superseded", 0) == n_total
    resumed = [o for o in report["outcomes"] if o["resumed"]]
    assert len(resumed) >= before["confirmed"]
    assert all(o["resumed"] for o in report["outcomes"] if o["state"] == "superseded")
    assert any(o["replayed"] for o in report["outcomes"])
    # Ground truth from the controllers: every command applied exactly once, with the
    # journal's command ids, and nothing else applied.
    applied = [(c.spec.address, cid) for c in ctls for cid, _, _ in c.applied]
    assert len(applied) == len(set(applied)) == n_total
    journaled = {(o["address"], o["command_id"]) for o in report["outcomes"]}
    assert set(applied) == journaled
    assert applied_before < n_total
