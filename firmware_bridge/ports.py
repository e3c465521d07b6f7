"""Which ports are simulated: the controller emulator announces its pty paths here.

An emulator writes ``<tempdir>/heliostat-sim-ports/<pid>.json`` (``{"ports": [...]}``)
while it runs. A port is *simulated* when it is ``loop://`` or a path announced by a live
emulator process; everything else (``/dev/ttyUSB0``, ``socket://``, ``rfc2217://``, a pty
nobody announced) is treated as a real bus, where writes need confirmation.
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


def is_simulated(port: str) -> bool:
    """True for ``loop://`` and for pty paths a live emulator announced."""
    if port.startswith("loop://"):
        return True
    d = announce_dir()
    if not d.is_dir():
        return False
    real = os.path.realpath(port) if "://" not in port else port
    for f in d.glob("*.json"):
        try:
            pid = int(f.stem)
            ports = json.loads(f.read_text()).get("ports", [])
        except (OSError, ValueError):
            continue
        if (port in ports or real in ports) and _alive(pid):
            return True
    return False
