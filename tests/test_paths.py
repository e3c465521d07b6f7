"""Ids and paths from data never lead outside their folder."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from heliostat.campaign.runner import CampaignRunner
from heliostat.config import ConfigError, load_field
from heliostat.errors import InputError
from heliostat.paths import id_problem, join_inside
from heliostat.vision.pipeline import fill_observations

SMALL = "tests/data/field_small.toml"
UNSAFE = ["../../x", "a/b", "..", "a..b", ".hidden", "-x", "", "H 1", "a\\b", "x" * 65, "H\x00"]


@pytest.mark.parametrize("hid", UNSAFE)
def test_unsafe_heliostat_ids_are_refused_by_the_config_loader(tmp_path, hid):
    text = open(SMALL).read()
    assert 'id = "H001"' in text
    p = tmp_path / "field.toml"
    p.write_text(text.replace('id = "H001"', f"id = {json.dumps(hid)}", 1))
    with pytest.raises(ConfigError, match=r"heliostats\[0\]\.id'.*not a safe id") as info:
        load_field(p)
    assert str(p) in str(info.value)


@pytest.mark.parametrize("hid", ["H001", "AA39", "h-1.b_2", "0", "x" * 64])
def test_safe_ids_pass(hid):
    assert id_problem(hid) is None


def test_join_inside_refuses_every_way_out(tmp_path):
    base = tmp_path / "frames"
    base.mkdir()
    assert join_inside(base, "H001/t.png") == base / "H001" / "t.png"
    for rel in ("../x.png", "H001/../../x.png", str(tmp_path / "x.png")):
        with pytest.raises(InputError, match="outside|absolute"):
            join_inside(base, rel, "frame")
    (base / "link").symlink_to(tmp_path)  # a link inside pointing out
    with pytest.raises(InputError, match="leads outside"):
        join_inside(base, "link/x.png")


def test_campaign_runner_writes_no_frame_outside_its_frames_folder(tmp_path):
    frames = tmp_path / "plant" / "frames"
    frames.mkdir(parents=True)
    runner = SimpleNamespace(plant=SimpleNamespace(frames_dir=frames))
    img = np.zeros((4, 4), np.uint16)
    t = pd.Timestamp("2025-03-06T10:00:00Z")
    with pytest.raises(InputError, match="leads outside"):
        CampaignRunner._save(runner, "../../x", t, img, img)
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == []
    names = CampaignRunner._save(runner, "H001", t, img, img)
    assert (frames / names[0]).is_file() and (frames / names[1]).is_file()


def test_observation_frames_outside_the_csv_folder_are_not_read(tmp_path):
    (tmp_path / "obs").mkdir()
    loaded = []

    def load(path):
        loaded.append(path)
        raise OSError("no image")

    obs = pd.DataFrame({"frame": ["../secret.png", "/etc/passwd", "frames/a.png"]})
    reg = SimpleNamespace(image_size_px=(4, 4))
    out, outcomes = fill_observations(obs, tmp_path / "obs", reg, load=load, auto_flat=False)
    assert loaded == [tmp_path / "obs" / "frames" / "a.png"]
    assert "leads outside" in outcomes[0].error and "absolute" in outcomes[1].error
    assert list(out["quality_flags"]) == ["vision_error"] * 3
