"""The corrections file has one reader and one writer, and the bridge uses that reader."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from firmware_bridge.safety import plan_corrections
from heliostat.calibration import corrections as calib
from heliostat.cli import main
from heliostat.config import load_field
from heliostat.corrections_format import FORMAT, read_corrections, write_corrections
from heliostat.errors import InputError
from sim.controller_fixtures import corrections_for, field_toml


@pytest.fixture
def field(tmp_path):
    p = tmp_path / "field.toml"
    p.write_text(field_toml(2))
    return p, load_field(p)


def test_calibration_writes_and_the_bridge_reads_with_one_pair_of_functions():
    # One owner: the calibration package re-exports the format module's objects.
    assert calib.read_corrections is read_corrections
    assert calib.write_corrections is write_corrections
    assert calib.FORMAT == FORMAT
    import firmware_bridge.safety as safety

    assert not hasattr(safety, "load_corrections")
    assert not hasattr(safety, "CORRECTIONS_FORMAT")


def test_written_file_is_read_back_equal_and_planned_by_the_bridge(field, tmp_path):
    _, cfg = field
    doc = corrections_for(cfg, n_setpoints=2, seed=7)
    p = tmp_path / "c.json"
    write_corrections(p, doc)
    back = read_corrections(p)
    assert back == doc  # JSON round trip of floats is exact (repr round-trips)
    cmds = plan_corrections(cfg, back)
    assert [c.kind for c in cmds] == ["params", "move", "move"] * 2


def test_the_bridge_import_chain_stays_light():
    # firmware_bridge never imports heliostat.vision; reading the corrections file must
    # not pull in the fitting stack either.
    code = (
        "import sys, firmware_bridge.safety, heliostat.corrections_format, "
        "heliostat.commands.bridge\n"
        "bad = [m for m in sys.modules if m.startswith(('heliostat.vision', "
        "'heliostat.calibration', 'sim'))]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_duplicate_heliostat_ids_are_refused_naming_the_id(field, tmp_path, capsys):
    fpath, cfg = field
    doc = corrections_for(cfg, n_setpoints=1, seed=1)
    doc["heliostats"].append(dict(doc["heliostats"][0]))
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"heliostats\[2\]: heliostat 'H001' appears twice"):
        read_corrections(p)
    rc = main(["bridge", "apply", str(p), "--field", str(fpath), "--port", "loop://", "--dry-run"])
    assert rc == 2 and "'H001' appears twice" in capsys.readouterr().err


def test_duplicate_json_keys_are_refused_naming_the_key(tmp_path):
    # json.loads would keep the second "axis1_zero_rad" silently.
    p = tmp_path / "c.json"
    head = '{"format": "' + FORMAT + '", "heliostats": [{"heliostat": "H001", "drive": "azel",'
    p.write_text(head + ' "parameters": {"axis1_zero_rad": 0.001, "axis1_zero_rad": 0.05}}]}')
    with pytest.raises(InputError, match=r"c.json: key 'axis1_zero_rad' appears twice"):
        read_corrections(p)


@pytest.mark.parametrize("const", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(tmp_path, const):
    p = tmp_path / "c.json"
    head = '{"format": "' + FORMAT + '", "heliostats": [{"heliostat": "H001", "drive": "azel",'
    p.write_text(head + ' "parameters": {"axis1_zero_rad": ' + const + "}}]}")
    with pytest.raises(InputError, match="not valid JSON"):
        read_corrections(p)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("format"), r"key 'format': expected"),
        (lambda d: d.update(heliostats={}), r"key 'heliostats': expected a list"),
        (lambda d: d["heliostats"][0].update(drive=3), r"\(H001\): key 'drive'"),
        (
            lambda d: d["heliostats"][0]["setpoints"][0].pop("axis2_steps"),
            r"\(H001\): setpoints\[0\] key 'axis2_steps': missing",
        ),
        (
            lambda d: d["heliostats"][0]["setpoints"][0].update(axis1_steps=1.5),
            r"\(H001\): setpoints\[0\] key 'axis1_steps': expected a 32-bit integer",
        ),
    ],
)
def test_malformed_documents_name_the_key(field, tmp_path, mutate, message):
    _, cfg = field
    doc = corrections_for(cfg, n_setpoints=1, seed=1)
    mutate(doc)
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=message):
        read_corrections(p)
