"""Camera frame sources: where the campaign's sun-on and sun-off frames come from.

A source implements :class:`FrameSource` — ``capture(request) -> image`` — and raises
:class:`FrameSourceError` when it has no frame for the request (the visit is then
recorded as skipped, never filled with a stale frame).

* :class:`OpenCVSource`: ``cv2.VideoCapture`` on a device index or a stream URL.
* :class:`~heliostat.campaign.genicam.GenICamSource`: an industrial GigE Vision / USB3
  Vision camera through `harvesters`, with fixed exposure and a software trigger.
* :class:`FolderSource`: a watched folder another program (the camera vendor's tool, a
  trigger script) writes image files into; each capture takes the oldest file that
  appeared since the source was opened, was not taken yet and arrived at or after the
  request's time (less a small tolerance); older ones are stale (e.g. the late frame of
  a capture that timed out) and are moved into ``stale/``, never used. Writers must make
  a file appear complete: write under a name starting with ``.`` or ending in ``.part`` /
  ``.tmp`` and rename it.
* :mod:`sim.plant` renders frames from the simulator.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from heliostat.campaign.schedule import Clock, SystemClock
from heliostat.errors import HeliostatError, InputError

_logger = logging.getLogger(__name__)

#: How much earlier than its capture request a FolderSource frame may have arrived. [s]
DEFAULT_ARRIVAL_TOLERANCE_S = 2.0

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

    A frame is known by its name, size, modification time [ns] and inode, not by its
    name alone: a camera program that restarts its counter, or overwrites one fixed
    name, delivers a new frame under a name already taken, and that frame is taken.

    A file is taken only if it **arrived at or after the request's time** (less
    ``arrival_tolerance_s``). Older new files — typically the frame of an earlier capture
    that timed out and landed late — are moved into the ``stale/`` subfolder, logged and
    never used, so a late frame is never attributed to the next heliostat or time.

    Arrival is the file's modification time. To be independent of the campaign clock
    (a stepped clock in rehearsals, or a host clock off from a network share's), it is
    compared with the filesystem's own time: at each capture the source touches a hidden
    marker file in the folder and reads its mtime, and a file's arrival on the campaign
    clock is ``now - (marker mtime - file mtime)``.

    Parameters
    ----------
    folder : Path
        Created if missing. Files present when the source opens are never taken (and left
        where they are).
    timeout_s, poll_s : float
        Longest wait for a new file and the interval between looks. [s]
    clock : Clock
        Waits go through ``clock.sleep`` (tests inject a stepped clock).
    arrival_tolerance_s : float
        How much earlier than the request a file may have arrived and still be taken
        (mtime resolution, a trigger or clock a little ahead). [s]
    log : callable, optional
        ``log(message)`` for frames set aside (default: the module's logger, warning).
    expected_size_px : (int, int), optional
        (width, height) of the camera's frames (``camera.toml``); a file of another size
        (or beyond ``heliostat.vision.io.MAX_PIXELS``) is refused from its header. [px]
    """

    #: Hidden file whose mtime gives the filesystem's "now" at each capture.
    MARKER = ".heliostat-capture-clock"
    #: Subfolder stale frames are moved into.
    STALE_DIR = "stale"

    def __init__(
        self,
        folder: str | Path,
        timeout_s: float = 30.0,
        poll_s: float = 0.5,
        clock: Clock | None = None,
        arrival_tolerance_s: float = DEFAULT_ARRIVAL_TOLERANCE_S,
        log: Callable[[str], None] | None = None,
        expected_size_px: tuple[int, int] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.expected_size_px = expected_size_px
        self.folder.mkdir(parents=True, exist_ok=True)
        self.timeout_s, self.poll_s = float(timeout_s), float(poll_s)
        self.arrival_tolerance_s = float(arrival_tolerance_s)
        if not math.isfinite(self.arrival_tolerance_s) or self.arrival_tolerance_s < 0:
            raise ValueError(
                f"FolderSource {self.folder}: arrival_tolerance_s must be a finite number "
                f">= 0, got {arrival_tolerance_s!r}"
            )
        self.clock = clock or SystemClock()
        self.log = log or _logger.warning
        #: Frames present at open, taken or set aside: (name, size, mtime_ns, inode).
        self._seen: set[tuple[str, int, int, int]] = set()
        for p in self._candidates():
            k = self._identity(p)
            if k is not None:
                self._seen.add(k)
        #: Frames set aside as stale (their paths in ``stale/``), oldest first.
        self.stale: list[Path] = []

    def _candidates(self) -> list[Path]:
        out = []
        for p in self.folder.iterdir():
            n = p.name
            if n.startswith(".") or n.endswith((".part", ".tmp")) or not p.is_file():
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES:
                out.append(p)
        return out

    @staticmethod
    def _identity(p: Path) -> tuple[str, int, int, int] | None:
        """What makes a frame a new one: name, size, mtime [ns], inode (None: gone)."""
        try:
            st = p.stat()
        except FileNotFoundError:
            return None
        return (p.name, st.st_size, st.st_mtime_ns, st.st_ino)

    def _fs_now_ns(self) -> int:
        """The filesystem's current time [ns since the epoch] (wall clock if unwritable)."""
        m = self.folder / self.MARKER
        try:
            m.touch(exist_ok=True)
            return m.stat().st_mtime_ns
        except OSError:
            return time.time_ns()

    def poll(self, cutoff_ns: int | None = None) -> Path | None:
        """The oldest new file (by modification time, then name), or None.

        With ``cutoff_ns`` (filesystem time [ns]), new files modified before it are set
        aside as stale first. The file is not marked as taken (see :meth:`capture`).
        """
        found = self._poll(cutoff_ns)
        return found[0] if found else None

    def _poll(self, cutoff_ns: int | None) -> tuple[Path, tuple[str, int, int, int]] | None:
        """:meth:`poll`, with the identity of the file found."""
        new = []
        for p in self._candidates():
            k = self._identity(p)
            if k is None or k in self._seen:  # taken away meanwhile, or known
                continue
            new.append((k[2], p.name, p, k))
        new.sort(key=lambda x: x[:2])
        for mtime_ns, _name, p, k in new:
            if cutoff_ns is None or mtime_ns >= cutoff_ns:
                return p, k
            self._seen.add(k)
            self._set_aside(p, (cutoff_ns - mtime_ns) / 1e9 + self.arrival_tolerance_s)
        return None

    def _set_aside(self, p: Path, early_s: float) -> None:
        """Move a stale frame into ``stale/`` (never used); log it.

        ``early_s``: how long before the capture request it arrived. [s]
        """
        d = self.folder / self.STALE_DIR
        dest = d / p.name
        i = 1
        while dest.exists():
            dest = d / f"{p.stem}.{i}{p.suffix}"
            i += 1
        why = (
            f"arrived {early_s:.1f} s before the capture request, "
            f"tolerance {self.arrival_tolerance_s:g} s"
        )
        try:
            d.mkdir(exist_ok=True)
            p.replace(dest)
        except OSError as exc:
            self.log(f"{p}: stale frame ({why}); not used, could not move it aside: {exc}")
            return
        self.stale.append(dest)
        self.log(f"{p}: stale frame ({why}); not used, moved to {dest}")

    def capture(self, request: CaptureRequest) -> NDArray:
        t_req = pd.Timestamp(request.time_utc)
        if t_req.tzinfo is None:
            raise ValueError(
                f"capture request for {request.heliostat_id}: time_utc must be "
                f"timezone-aware UTC, got naive {t_req}"
            )
        # the request time on the filesystem's clock, less the tolerance
        fs_now_ns = self._fs_now_ns()
        behind_ns = (self.clock.now_utc() - t_req).value
        cutoff_ns = fs_now_ns - behind_ns - round(self.arrival_tolerance_s * 1e9)
        n_stale = len(self.stale)
        waited = 0.0
        while True:
            found = self._poll(cutoff_ns)
            if found is not None:
                p, k = found
                self._seen.add(k)
                try:
                    from heliostat.vision.io import load_image

                    return to_grey(load_image(p, expected_size_px=self.expected_size_px))
                except InputError as exc:
                    raise FrameSourceError(str(exc)) from None
            if waited >= self.timeout_s:
                aside = len(self.stale) - n_stale
                extra = (
                    f" ({aside} stale frame(s) set aside in {self.folder / self.STALE_DIR})"
                    if aside
                    else ""
                )
                raise FrameSourceError(
                    f"{self.folder}: no new frame within {self.timeout_s:g} s for "
                    f"{request.heliostat_id} ({request.phase}) at {request.time_utc}{extra}"
                )
            self.clock.sleep(self.poll_s)
            waited += self.poll_s

    def close(self) -> None:
        (self.folder / self.MARKER).unlink(missing_ok=True)


def open_source(
    cfg,
    clock: Clock | None = None,
    log: Callable[[str], None] | None = None,
    expected_size_px: tuple[int, int] | None = None,
) -> FrameSource:
    """The source a :class:`~heliostat.campaign.config.SourceConfig` describes.

    ``log`` receives the folder source's stale-frame messages; ``expected_size_px`` is
    the camera's (width, height), which folder frames must have. [px]
    """
    if cfg.type == "opencv":
        return OpenCVSource(cfg.device, cfg.discard_frames)
    if cfg.type == "genicam":
        from heliostat.campaign.genicam import GenICamSource

        return GenICamSource(
            cfg.cti, cfg.serial, cfg.exposure_s, cfg.gain_db, cfg.trigger, cfg.timeout_s
        )
    tol = cfg.arrival_tolerance_s
    return FolderSource(cfg.folder, cfg.timeout_s, cfg.poll_s, clock, tol, log, expected_size_px)
