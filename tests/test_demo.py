"""``heliostat demo`` end to end on a tiny configuration."""

from __future__ import annotations

import json

import pandas as pd

from heliostat.cli import main
from heliostat.commands.demo import DEMO_STAGES, DemoOptions, format_summary, run_demo
from heliostat.config import load_camera, load_field
from sim.field import load_truth
from sim.observe import OBSERVATION_COLUMNS


def _tiny(out, **kw) -> DemoOptions:
    base = dict(
        heliostats=4,
        days=1,
        seed=3,
        out=str(out),
        frame_heliostats=1,
        frames_per_heliostat=1,
        camera_size=(256, 208),
    )
    base.update(kw)
    return DemoOptions(**base)


def test_demo_writes_expected_files(tmp_path):
    out = tmp_path / "demo"
    logged: list[str] = []
    summary = run_demo(_tiny(out), log=logged.append)
    assert logged == ["[1/2] plant ...", "[2/2] campaign ..."]
    assert set(summary["stages"]) == {name for name, _ in DEMO_STAGES}
    on_disk = json.loads((out / "summary.json").read_text())
    assert (
        on_disk["stages"]["campaign"]["observations"]
        == summary["stages"]["campaign"]["observations"]
    )
    c = out / "campaign"
    field_cfg = load_field(c / "field.toml")
    assert len(field_cfg.heliostats) == 4
    assert load_truth(c / "truth.json", field_cfg).keys() == field_cfg.heliostats.keys()
    assert load_camera(c / "camera.toml").width_px == 256
    obs = pd.read_csv(c / "observations.csv", keep_default_na=False)
    assert list(obs.columns) == list(OBSERVATION_COLUMNS)
    assert len(obs) == summary["stages"]["campaign"]["observations"] > 10
    framed = obs[obs["frame"] != ""]
    # frames_per_heliostat=1 for one heliostat: one visit with a sun-on and a dark frame
    assert len(framed) == 1
    assert (c / framed["frame"].iloc[0]).is_file()
    assert len(list((c / "frames").rglob("*.png"))) == 2
    text = format_summary(summary)
    assert "4 heliostats" in text and "1 visits" in text and "image-free" in text
    # an earlier demo folder is replaced, not refused
    run_demo(_tiny(out), log=logged.append)


def test_demo_stages_are_extensible(tmp_path):
    def stage_count(ctx):
        return {"rows": len(ctx.state["observations"])}

    stages = (*DEMO_STAGES, ("count", stage_count))
    summary = run_demo(_tiny(tmp_path / "d", frame_heliostats=0), stages=stages, log=lambda m: None)
    assert summary["stages"]["count"]["rows"] == summary["stages"]["campaign"]["observations"]
    assert "count" in format_summary(summary)


def test_demo_cli_json_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["demo", "--heliostats", "3", "--days", "1", "--frame-heliostats", "0"]
    assert main([*args, "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["stages"]["plant"]["heliostats"] == 3
    # progress goes to stderr: stage lines and, off a terminal, one finished bar
    err = captured.err.splitlines()
    assert err[:2] == ["[1/2] plant ...", "[2/2] campaign ..."]
    assert err[2].startswith("campaign   [" + "#" * 30 + "] 3/3")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    assert main([*args, "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("heliostat: error: --out")
    assert main([*args, "--heliostats", "0", "--out", str(tmp_path / "z")]) == 2
