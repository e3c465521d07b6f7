"""One campaign per plant: a second run is refused naming the first; only what was
stored is counted."""

from __future__ import annotations

import os
import socket

import pytest

from heliostat.campaign import History, RunOptions, run_campaign
from heliostat.campaign.lock import PlantLock
from heliostat.errors import InputError
from sim.plant import make_sim_plant


def test_second_lock_on_a_plant_is_refused_naming_the_holder(tmp_path):
    db = tmp_path / "h.sqlite"
    with PlantLock(db):
        with pytest.raises(InputError, match="another campaign is running") as info:
            PlantLock(db).acquire()
        msg = str(info.value)
        assert f"pid {os.getpid()} on host {socket.gethostname()} since " in msg
        assert str(db) in msg
    # released: the next run takes it
    with PlantLock(db):
        pass


def test_a_campaign_on_a_locked_plant_is_refused_and_touches_nothing(tmp_path):
    sp = make_sim_plant(tmp_path)
    try:
        plant = sp.plant()
        with PlantLock(plant.history_db):
            clock = sp.utc_clock()
            with pytest.raises(InputError, match="another campaign is running on this plant"):
                run_campaign(
                    plant, clock=clock, source=sp.source(clock), options=RunOptions(max_visits=1)
                )
        assert sum(len(c.applied) for c in sp.controllers.values()) == 0  # nothing moved
        clock = sp.utc_clock()
        out = run_campaign(
            plant, clock=clock, source=sp.source(clock), options=RunOptions(max_visits=1)
        )
    finally:
        sp.stop()
    assert out["outcomes"] == {"observed": 1}


def test_an_observation_not_stored_is_not_counted(tmp_path, monkeypatch):
    # Another writer stored the slot first: INSERT OR IGNORE stores nothing, and the
    # run must not report it as observed.
    sp = make_sim_plant(tmp_path)
    monkeypatch.setattr(History, "add_observation", lambda self, rec: None)
    try:
        clock = sp.utc_clock()
        out = run_campaign(
            sp.plant(), clock=clock, source=sp.source(clock), options=RunOptions(max_visits=1)
        )
    finally:
        sp.stop()
    assert out["outcomes"] == {"already_stored": 1}
