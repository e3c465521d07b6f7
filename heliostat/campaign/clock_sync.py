"""Is the PC clock synchronised? Asked of chrony or systemd-timesyncd before a campaign.

The campaign computes the sun from the PC's clock. The sun's hour angle grows by 2π rad
per (solar) day, 15°/h, 7.27e-5 rad/s: **one second of clock error moves the computed
sun by up to 0.073 mrad** (times the cosine of its declination), and the reflected beam
the calibration fits by as much. A clock that drifts
unsynchronised by minutes ruins a calibration; :func:`clock_warning` says so before it
starts.

The probes are injectable (``run``, ``which``) so that tests need no real clock daemon.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

#: The sun's hour-angle rate (2π per day of 86400 s, 15°/h): its apparent angular speed
#: at most. [mrad/s]
SUN_MRAD_PER_S = 2 * math.pi / 86400 * 1e3
#: A synchronised clock's offset above this is still worth a warning. [s]
MAX_OFFSET_S = 0.5


@dataclass(frozen=True, slots=True)
class ClockSync:
    """What the time daemon says.

    Attributes
    ----------
    synchronised : bool or None
        None when no daemon could be asked.
    offset_s : float or None
        Estimated offset of the system clock from true time (chrony only). [s]
    source : str
        ``"chronyc"``, ``"timedatectl"`` or ``""``.
    detail : str
        What was asked and answered, for the message.
    """

    synchronised: bool | None
    offset_s: float | None = None
    source: str = ""
    detail: str = ""


Runner = Callable[..., subprocess.CompletedProcess]


def _ask(run: Runner, argv: list[str]) -> str | None:
    try:
        p = run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def check_clock_sync(
    run: Runner = subprocess.run, which: Callable[[str], str | None] = shutil.which
) -> ClockSync:
    """Ask chrony (``chronyc -c tracking``: leap status and system-time offset), else
    systemd (``timedatectl show -p NTPSynchronized --value``)."""
    if which("chronyc"):
        out = _ask(run, ["chronyc", "-c", "tracking"])
        if out:
            f = out.splitlines()[0].split(",")
            # CSV fields: ref id, name, stratum, ref time, system time [s], last offset,
            # RMS offset, frequency, residual freq, skew, root delay, root dispersion,
            # update interval, leap status
            try:
                offset = float(f[4])
            except (IndexError, ValueError):
                offset = None
            leap = f[-1].strip()
            return ClockSync(
                leap != "Not synchronised" and f[1] != "",
                offset,
                "chronyc",
                f"chronyc tracking: leap status {leap!r}",
            )
    if which("timedatectl"):
        out = _ask(run, ["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
        if out in ("yes", "no"):
            detail = f"timedatectl: NTPSynchronized={out}"
            return ClockSync(out == "yes", None, "timedatectl", detail)
    return ClockSync(None, None, "", "neither chronyc nor timedatectl answered")


def clock_warning(status: ClockSync) -> str | None:
    """One line for the operator when a daemon says the clock is off, else None (also
    when no daemon answered: a container or a PC without chrony/systemd, where the
    summary's ``clock_sync`` says ``unknown``)."""
    rate = f"1 s of clock error moves the computed sun by up to {SUN_MRAD_PER_S:.3f} mrad"
    if status.synchronised is None:
        return None
    if not status.synchronised:
        return (
            f"warning: the PC clock is not synchronised ({status.detail}); {rate}: enable NTP "
            "(timedatectl set-ntp true, or chrony) before calibrating"
        )
    if status.offset_s is not None and abs(status.offset_s) > MAX_OFFSET_S:
        err = abs(status.offset_s) * SUN_MRAD_PER_S
        return (
            f"warning: the PC clock is {status.offset_s:+.2f} s off true time ({status.detail}): "
            f"up to {err:.3f} mrad of sun; wait for NTP to correct it"
        )
    return None
