"""The campaign's warning about an unsynchronised PC clock (time daemons faked)."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
from contextlib import redirect_stderr, redirect_stdout

import pytest

from heliostat.campaign.clock_sync import (
    SUN_MRAD_PER_S,
    ClockSync,
    check_clock_sync,
    clock_warning,
)


def _daemon(tools: dict[str, str]):
    """Fake ``which`` and ``run``: ``tools`` maps a program to the stdout it prints."""

    def which(name):
        return f"/usr/bin/{name}" if name in tools else None

    def run(argv, **kw):
        return subprocess.CompletedProcess(argv, 0, tools[argv[0]], "")

    return {"run": run, "which": which}


TAIL = "-1.2,0.001,0.01,0.001,0.0003,64.2,Normal"  # frequency .. leap status
CHRONY_OK = "A29FC87B,ntp1,3,1764672000.1,-0.000012,0.000001,0.00002," + TAIL
CHRONY_OFF = "A29FC87B,ntp1,3,1764672000.1,2.500000,0.1,0.2," + TAIL
CHRONY_UNSYNC = "00000000,,0,0.0,0.000000,0.0,0.0,0.0,0.0,0.0,1.0,1.0,0.0,Not synchronised"


def test_one_second_of_clock_is_0_073_mrad_of_sun():
    # 15 deg of hour angle per hour: 15 * pi / 180 / 3600 rad/s = 7.2722e-5 rad/s.
    assert SUN_MRAD_PER_S == pytest.approx(15 * 3.141592653589793 / 180 / 3600 * 1e3, rel=1e-12)


def test_chrony_synchronised_is_quiet():
    s = check_clock_sync(**_daemon({"chronyc": CHRONY_OK}))
    assert (s.synchronised, s.source) == (True, "chronyc")
    assert s.offset_s == pytest.approx(-1.2e-5)
    assert clock_warning(s) is None


def test_chrony_offset_is_given_in_mrad_of_sun():
    s = check_clock_sync(**_daemon({"chronyc": CHRONY_OFF, "timedatectl": "yes"}))
    w = clock_warning(s)
    # 2.5 s x 0.0727 mrad/s = 0.182 mrad
    assert w.startswith("warning: the PC clock is +2.50 s off true time") and "0.182 mrad" in w


def test_unsynchronised_clock_warns_with_what_to_do():
    for tools in ({"chronyc": CHRONY_UNSYNC}, {"timedatectl": "no"}):
        w = clock_warning(check_clock_sync(**_daemon(tools)))
        assert w.startswith("warning: the PC clock is not synchronised")
        assert "0.073 mrad" in w and "timedatectl set-ntp true" in w


def test_no_daemon_is_unknown_and_quiet():
    s = check_clock_sync(**_daemon({}))
    assert s.synchronised is None and clock_warning(s) is None
    assert check_clock_sync(**_daemon({"timedatectl": "maybe"})).synchronised is None


def test_campaign_prints_the_warning_and_puts_it_in_the_summary(tmp_path):
    from heliostat.commands import campaign as campaign_cmd
    from sim.plant import make_sim_plant

    sp = make_sim_plant(tmp_path / "plant", n=1)
    try:
        p = argparse.ArgumentParser(prog="heliostat")
        campaign_cmd.register(p.add_subparsers(dest="command"))
        args = p.parse_args(["campaign", "--config", str(sp.plant_toml), "--dry-run", "--json"])
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            rc = campaign_cmd.run(
                args,
                clock=sp.utc_clock("2025-04-01T10:05:00Z"),
                clock_check=lambda: ClockSync(False, None, "timedatectl", "NTPSynchronized=no"),
            )
        assert rc == 0
        assert err.getvalue().startswith("warning: the PC clock is not synchronised")
        sync = json.loads(out.getvalue())["clock_sync"]
        assert sync["synchronised"] is False and sync["warning"].startswith("warning:")
    finally:
        sp.stop()
