"""Which ports are simulated: the controller emulator announces its pty paths here.

An emulator writes ``<tempdir>/heliostat-sim-ports/<pid>.json`` (``{"ports": [...]}``)
while it runs. A port is *simulated* when it is ``loop://`` or a path announced by a live
emulator process of the current user; everything else (``/dev/ttyUSB0``, ``socket://``,
``rfc2217://``, a pty nobody announced, an announcement file another user owns) is
treated as a real bus, where writes need confirmation. ``heliostat sim controllers``
withdraws its announcement on Ctrl-C and on SIGTERM; a SIGKILLed emulator leaves its file,
which is ignored once its process is gone.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def announce_dir() -> Path:
    """Folder holding the emulators' announcements."""
    return Path(tempfile.gettempdir()) / "heliostat-sim-ports"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def announce(ports: list[str]) -> Path:
    """Record this process's emulated ports; returns the file to remove on exit."""
    d = announce_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{os.getpid()}.json"
    old = []
    if path.exists():
        try:
            old = json.loads(path.read_text()).get("ports", [])
        except (OSError, ValueError):
            old = []
    path.write_text(json.dumps({"ports": sorted(set(old) | set(ports))}))
    return path


def withdraw(ports: list[str]) -> None:
    """Remove ports from this process's announcement (the file when none are left)."""
    path = announce_dir() / f"{os.getpid()}.json"
    try:
        left = [p for p in json.loads(path.read_text()).get("ports", []) if p not in ports]
    except (OSError, ValueError):
        return
    if left:
        path.write_text(json.dumps({"ports": left}))
    else:
        path.unlink(missing_ok=True)


def _owned(path: Path) -> bool:
    """True when the current user owns ``path`` (always True where there are no uids)."""
    getuid = getattr(os, "getuid", None)
    if getuid is None:  # pragma: no cover - Windows
        return True
    try:
        return path.stat().st_uid == getuid()
    except OSError:
        return False


def is_simulated(port: str) -> bool:
    """True for ``loop://`` and for pty paths a live emulator of this user announced."""
    if port.startswith("loop://"):
        return True
    d = announce_dir()
    if not d.is_dir():
        return False
    real = os.path.realpath(port) if "://" not in port else port
    for f in d.glob("*.json"):
        if not _owned(f):  # anyone can write to the temp dir: trust only our own files
            continue
        try:
            pid = int(f.stem)
            ports = json.loads(f.read_text()).get("ports", [])
        except (OSError, ValueError):
            continue
        if (port in ports or real in ports) and _alive(pid):
            return True
    return False
