"""The CLI shell: sun command output and clean one-line errors."""

import json
import subprocess
import sys

import numpy as np

from heliostat.cli import main
from heliostat.config import load_field
from heliostat.sun import sun_position

SMALL = "tests/data/field_small.toml"


def test_sun_json_matches_library(capsys):
    assert main(["sun", "--site", SMALL, "--time", "2025-06-21T12:00:00Z", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    sp = sun_position(load_field(SMALL).site, "2025-06-21T12:00:00Z")
    assert out["azimuth_deg"] == np.degrees(sp.azimuth_rad[0])
    np.testing.assert_allclose(out["u_sun_enu"], sp.u_sun_enu[0], atol=1e-9)
    assert out["above_horizon"] is True


def test_sun_table_has_one_row_per_time(capsys):
    assert (
        main(
            [
                "sun",
                "--site",
                SMALL,
                "--time",
                "2025-06-21T04:00:00Z",
                "--time",
                "2025-06-21T12:00:00+02:00",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "2025-06-21T04:00:00+00:00" in out and "2025-06-21T10:00:00+00:00" in out


def test_errors_are_one_line_without_traceback():
    for args in (
        ["sun", "--site", "missing.toml"],
        ["sun", "--site", SMALL, "--time", "2025-06-21T12:00:00"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "heliostat.cli", *args], capture_output=True, text=True
        )
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("heliostat: error:")
        assert len(proc.stderr.strip().splitlines()) == 1


def test_config_check(tmp_path, capsys):
    assert main(["config", "check", SMALL]) == 0
    assert "3 heliostats (2 azel, 1 linear)" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(open(SMALL).read().replace("address = 2", "address = 0"))
    assert main(["config", "check", SMALL, str(bad), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out[0]["ok"] and not out[1]["ok"]
    assert "heliostats[1].address" in out[1]["error"]
