"""Camera frame sources: where the campaign's sun-on and sun-off frames come from.

A source implements :class:`FrameSource` — ``capture(request) -> image`` — and raises
:class:`FrameSourceError` when it has no frame for the request (the visit is then
recorded as skipped, never filled with a stale frame).

* :class:`OpenCVSource`: ``cv2.VideoCapture`` on a device index or a stream URL.
* :class:`FolderSource`: a watched folder another program (the camera vendor's tool, a
  trigger script) writes image files into; each capture takes the oldest file that
  appeared since the source was opened and was not taken yet. Writers must make a file
  appear complete: write under a name starting with ``.`` or ending in ``.part`` /
  ``.tmp`` and rename it.
* :mod:`heliostat.campaign.simulated` renders frames from the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from heliostat.campaign.schedule import Clock, SystemClock
from heliostat.errors import HeliostatError, InputError

#: File suffixes a FolderSource takes as frames.
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".pgm", ".bmp", ".jpg", ".jpeg", ".npy")


class FrameSourceError(HeliostatError):
    """No (usable) frame for a request: camera gone, timeout, unreadable file."""


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """What the campaign wants a frame of.

    Attributes
    ----------
    heliostat_id : str
        Heliostat being visited.
    phase : {"on", "off"}
        Sun-on (beam on the target) or sun-off (heliostat moved off the target).
    slot : str
        Slot key of the visit (ISO UTC start).
    time_utc : Timestamp
        When the frame is asked for (the heliostat has settled).
    """

    heliostat_id: str
    phase: str
    slot: str
    time_utc: pd.Timestamp


class FrameSource(Protocol):
    """A camera, as the campaign sees it."""

    def capture(self, request: CaptureRequest) -> NDArray:
        """One grey (or colour, converted later) frame, raw values. Raises FrameSourceError."""

    def close(self) -> None:
        """Release the device."""


def to_grey(image: NDArray) -> NDArray:
    """A colour frame (OpenCV's BGR/BGRA) as grey; grey frames unchanged."""
    import cv2

    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(image, code)
    raise FrameSourceError(f"expected a grey or colour frame, got shape {image.shape}")


class OpenCVSource:
    """Frames from ``cv2.VideoCapture``.

    Parameters
    ----------
    device : int or str
        Device index (``0`` = first camera) or a URL/path OpenCV can open.
    discard_frames : int
        Frames read and dropped before the one kept (drivers buffer a few stale frames,
        taken before the heliostat settled).
    capture_factory : callable, optional
        ``device -> VideoCapture-like`` (tests inject a fake); default ``cv2.VideoCapture``.
    """

    def __init__(self, device: int | str, discard_frames: int = 2, capture_factory=None) -> None:
        self.device = device
        self.discard_frames = int(discard_frames)
        self._factory = capture_factory
        self._cap = None

    def open(self) -> OpenCVSource:
        """Open the device now (raises FrameSourceError if it cannot be opened)."""
        self._open()
        return self

    def _open(self):
        if self._cap is None:
            if self._factory is None:
                import cv2

                cap = cv2.VideoCapture(self.device)
            else:
                cap = self._factory(self.device)
            if not cap.isOpened():
                raise FrameSourceError(f"camera {self.device!r}: cv2.VideoCapture cannot open it")
            self._cap = cap
        return self._cap

    def capture(self, request: CaptureRequest) -> NDArray:
        cap = self._open()
        for _ in range(self.discard_frames):
            cap.grab()
        ok, frame = cap.read()
        if not ok or frame is None:
            raise FrameSourceError(
                f"camera {self.device!r}: no frame for {request.heliostat_id} "
                f"({request.phase}) at {request.time_utc}"
            )
        return to_grey(np.asarray(frame))

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderSource:
    """Frames from a watched folder.

    Parameters
    ----------
    folder : Path
        Created if missing. Files present when the source opens are never taken.
    timeout_s, poll_s : float
        Longest wait for a new file and the interval between looks. [s]
    clock : Clock
        Waits go through ``clock.sleep`` (tests inject a stepped clock).
    """

    def __init__(
        self,
        folder: str | Path,
        timeout_s: float = 30.0,
        poll_s: float = 0.5,
        clock: Clock | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.timeout_s, self.poll_s = float(timeout_s), float(poll_s)
        self.clock = clock or SystemClock()
        self._seen: set[str] = {p.name for p in self._candidates()}

    def _candidates(self) -> list[Path]:
        out = []
        for p in self.folder.iterdir():
            n = p.name
            if n.startswith(".") or n.endswith((".part", ".tmp")) or not p.is_file():
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES:
                out.append(p)
        return out

    def poll(self) -> Path | None:
        """The oldest new file (by modification time, then name), or None."""
        new = [p for p in self._candidates() if p.name not in self._seen]
        if not new:
            return None
        return min(new, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def capture(self, request: CaptureRequest) -> NDArray:
        waited = 0.0
        while True:
            p = self.poll()
            if p is not None:
                self._seen.add(p.name)
                try:
                    from heliostat.vision.io import load_image

                    return to_grey(load_image(p))
                except InputError as exc:
                    raise FrameSourceError(str(exc)) from None
            if waited >= self.timeout_s:
                raise FrameSourceError(
                    f"{self.folder}: no new frame within {self.timeout_s:g} s for "
                    f"{request.heliostat_id} ({request.phase}) at {request.time_utc}"
                )
            self.clock.sleep(self.poll_s)
            waited += self.poll_s

    def close(self) -> None:
        pass


def open_source(cfg, clock: Clock | None = None) -> FrameSource:
    """The source a :class:`~heliostat.campaign.config.SourceConfig` describes."""
    if cfg.type == "opencv":
        return OpenCVSource(cfg.device, cfg.discard_frames)
    return FolderSource(cfg.folder, cfg.timeout_s, cfg.poll_s, clock)
