"""Frames from an industrial (GenICam) camera through ``harvesters``.

GigE Vision and USB3 Vision cameras are driven through a GenTL producer — a ``.cti``
library from the camera's vendor (or a generic one) — and the `harvesters` package
(``pip install 'heliostat-calibration[genicam]'``). :class:`GenICamSource` sets the
exposure and gain by hand (the automatic controls off: a sun spot would drive them,
and the sun-off frame must keep the sun-on frame's exposure), and by default triggers
each frame by software, so that a frame is taken *after* the heliostat settled rather
than picked from a free-running stream. Node names are those of the GenICam Standard
Features Naming Convention (SFNC): ``ExposureAuto``, ``ExposureTime`` [µs],
``GainAuto``, ``Gain`` [dB], ``TriggerMode``, ``TriggerSource``, ``TriggerSoftware``.

The ``harvester_factory`` parameter is the hardware root: tests pass a fake with
harvesters' interface (``add_file``, ``update``, ``create``; the acquirer's
``remote_device.node_map``, ``start``, ``fetch``, ``stop``, ``destroy``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heliostat.campaign.sources import CaptureRequest, FrameSourceError, to_grey

#: Trigger modes: a software trigger per capture, or the newest frame of a free-running
#: stream.
TRIGGERS = ("software", "free")


class GenICamSource:
    """A GenICam camera as a :class:`~heliostat.campaign.sources.FrameSource`.

    Parameters
    ----------
    cti : str or Path
        GenTL producer file (``.cti``) of the camera's transport layer.
    serial : str, optional
        Serial number of the camera (default: the first one found).
    exposure_s : float, optional
        Exposure time; None leaves the camera's setting (automatic exposure is still
        switched off). [s]
    gain_db : float, optional
        Analogue gain; None leaves the camera's setting (automatic gain off). [dB]
    trigger : {"software", "free"}
    timeout_s : float
        Longest wait for a frame. [s]
    harvester_factory : callable, optional
        ``() -> Harvester-like``; default ``harvesters.core.Harvester``.
    """

    def __init__(
        self,
        cti: str | Path,
        serial: str | None = None,
        exposure_s: float | None = None,
        gain_db: float | None = None,
        trigger: str = "software",
        timeout_s: float = 5.0,
        harvester_factory: Callable[[], Any] | None = None,
    ) -> None:
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
        if exposure_s is not None and not exposure_s > 0:
            raise ValueError(f"exposure_s must be positive, got {exposure_s!r}")
        self.cti, self.serial = str(cti), serial
        self.exposure_s, self.gain_db = exposure_s, gain_db
        self.trigger, self.timeout_s = trigger, float(timeout_s)
        self._factory = harvester_factory
        self._h = self._ia = None

    # ------------------------------------------------------------------ device
    def _harvester(self):
        if self._factory is not None:
            return self._factory()
        try:
            from harvesters.core import Harvester
        except ImportError:
            raise FrameSourceError(
                "the GenICam source needs the 'harvesters' package: pip install "
                "'heliostat-calibration[genicam]' (and the camera vendor's GenTL producer, "
                "a .cti file)"
            ) from None
        return Harvester()

    def open(self) -> GenICamSource:
        """Find the camera, set exposure, gain and trigger, start acquisition."""
        if self._ia is not None:
            return self
        if self._factory is None and not Path(self.cti).is_file():
            raise FrameSourceError(f"GenTL producer {self.cti}: file not found")
        h = self._harvester()
        h.add_file(self.cti)
        h.update()
        found = [getattr(d, "serial_number", "") for d in h.device_info_list]
        if not found:
            h.reset()
            raise FrameSourceError(f"no GenICam camera found through {self.cti}")
        if self.serial is not None and self.serial not in found:
            h.reset()
            raise FrameSourceError(
                f"GenICam camera {self.serial!r} not found through {self.cti} "
                f"(found: {', '.join(map(str, found))})"
            )
        ia = h.create({"serial_number": self.serial} if self.serial is not None else 0)
        self._h, self._ia = h, ia
        nm = ia.remote_device.node_map
        try:
            self._set(nm, "ExposureAuto", "Off")
            if self.exposure_s is not None:
                self.set_exposure(self.exposure_s)
            self._set(nm, "GainAuto", "Off")
            if self.gain_db is not None:
                self._set(nm, "Gain", float(self.gain_db))
            if self.trigger == "software":
                self._set(nm, "TriggerSelector", "FrameStart", required=False)
                self._set(nm, "TriggerMode", "On")
                self._set(nm, "TriggerSource", "Software")
            else:
                self._set(nm, "TriggerMode", "Off")
            ia.start()
        except Exception:
            self.close()
            raise
        return self

    def _set(self, nm, name: str, value, required: bool = True) -> None:
        node = getattr(nm, name, None)
        if node is None:
            if not required:
                return
            raise FrameSourceError(f"GenICam camera {self._name()}: has no node {name!r}")
        try:
            node.value = value
        except Exception as exc:  # noqa: BLE001 - genicam raises its own error types
            raise FrameSourceError(
                f"GenICam camera {self._name()}: cannot set {name} = {value!r}: {exc}"
            ) from None

    def _name(self) -> str:
        return self.serial or f"(first on {Path(self.cti).name})"

    def set_exposure(self, exposure_s: float) -> None:
        """Set the exposure time (SFNC ``ExposureTime``, in µs on the wire). [s]"""
        if not exposure_s > 0:
            raise ValueError(f"exposure_s must be positive, got {exposure_s!r}")
        self.exposure_s = float(exposure_s)
        if self._ia is not None:
            self._set(self._ia.remote_device.node_map, "ExposureTime", self.exposure_s * 1e6)

    # ------------------------------------------------------------------ frames
    def capture(self, request: CaptureRequest) -> NDArray:
        self.open()
        ia = self._ia
        try:
            if self.trigger == "software":
                ia.remote_device.node_map.TriggerSoftware.execute()
            with ia.fetch(timeout=self.timeout_s) as buffer:
                comp = buffer.payload.components[0]
                h, w = int(comp.height), int(comp.width)
                data = np.asarray(comp.data)
                channels = data.size // (h * w) if h * w else 0
                if channels not in (1, 3, 4):
                    raise FrameSourceError(
                        f"GenICam camera {self._name()}: a {w}x{h} frame with {data.size} "
                        "values (expected 1, 3 or 4 per pixel)"
                    )
                shape = (h, w) if channels == 1 else (h, w, channels)
                img = data.reshape(shape).copy()  # the buffer returns to the driver
        except FrameSourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - timeouts and driver errors alike
            raise FrameSourceError(
                f"GenICam camera {self._name()}: no frame within {self.timeout_s:g} s for "
                f"{request.heliostat_id} ({request.phase}) at {request.time_utc}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        return to_grey(img)

    def close(self) -> None:
        if self._ia is not None:
            try:
                self._ia.stop()
            finally:
                self._ia.destroy()
                self._ia = None
        if self._h is not None:
            self._h.reset()
            self._h = None
