"""Whole-system energy: the calibration PC's idle power and the cameras over a campaign.

The meter (:mod:`heliostat.ledger.energy`) measures marginal compute: the CPU time and
memory of our own process (or the socket, under RAPL). A plant owner pays for more: the
calibration PC stays on for the whole campaign, idle most of the time, and the cameras
with it. :class:`SystemPower` is that figure, per hour of campaign, to set beside the
marginal one (``heliostat ledger summary --pc-idle-w ... --campaign-hours ...``).

Defaults are stated assumptions, not measurements: 30 W for a small PC at idle (desktop
and industrial PCs idle at roughly 15-60 W) and 4 W per camera (GigE / USB3 machine-vision
cameras draw roughly 2-6 W). Give your own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from heliostat.ledger.carbon import Energy

#: Assumed idle power of the calibration PC. [W]
DEFAULT_PC_IDLE_W = 30.0
#: Assumed power of one camera. [W]
DEFAULT_CAMERA_W = 4.0


@dataclass(frozen=True, slots=True)
class SystemPower:
    """Standing power of the calibration system.

    Attributes
    ----------
    pc_idle_w : float
        Calibration PC at idle. [W]
    camera_w : float
        One camera. [W]
    n_cameras : int
    """

    pc_idle_w: float = DEFAULT_PC_IDLE_W
    camera_w: float = DEFAULT_CAMERA_W
    n_cameras: int = 1

    def __post_init__(self) -> None:
        for k in ("pc_idle_w", "camera_w"):
            v = getattr(self, k)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{k} must be finite and >= 0 [W], got {v!r}")
        if not (isinstance(self.n_cameras, int) and self.n_cameras >= 0):
            raise ValueError(f"n_cameras must be an integer >= 0, got {self.n_cameras!r}")

    @property
    def watts(self) -> float:
        """Total standing power. [W]"""
        return self.pc_idle_w + self.camera_w * self.n_cameras

    def energy(self, campaign_hours: float) -> Energy:
        """Energy over a campaign of ``campaign_hours`` hours (wall clock). [h]"""
        if not (math.isfinite(campaign_hours) and campaign_hours >= 0):
            raise ValueError(f"campaign_hours must be finite and >= 0, got {campaign_hours!r}")
        return Energy.from_power(self.watts, campaign_hours * 3600.0)
