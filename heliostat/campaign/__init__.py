"""Calibration campaigns on a plant: ``heliostat campaign --config plant.toml``.

- :mod:`~heliostat.campaign.config`: ``plant.toml`` (validated up front);
- :mod:`~heliostat.campaign.schedule`: clocks, time slots, setpoints, spread thresholds;
- :mod:`~heliostat.campaign.sources`: camera frame sources (OpenCV, watched folder);
- :mod:`~heliostat.campaign.history`: the campaign's tables in the history database;
- :mod:`~heliostat.campaign.runner`: the loop (visit, observe, fit, propose corrections).

A simulated camera and rehearsal plant for tests live in the simulator (:mod:`sim.plant`).

See ``docs/campaign.md``.
"""

from heliostat.campaign.config import PlantConfig, load_plant
from heliostat.campaign.history import History
from heliostat.campaign.runner import CampaignRunner, RunOptions, run_campaign
from heliostat.campaign.schedule import SteppedClock, SystemClock

__all__ = [
    "CampaignRunner",
    "History",
    "PlantConfig",
    "RunOptions",
    "SteppedClock",
    "SystemClock",
    "load_plant",
    "run_campaign",
]
