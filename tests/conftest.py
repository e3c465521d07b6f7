"""Shared fixtures."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sim.real_targets import default_real_dir

#: tests/data/downstream_example is a separate project (it enables sim.testing in its own
#: conftest) that tests/test_sim_testing.py runs through pytester; not part of this suite.
collect_ignore = ["data/downstream_example"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: The real Jülich data (../shared/real beside the clone, as in CI, or $HELIOSTAT_REAL_DIR);
#: tests that need it skip with a reason when it is absent.
REAL_DIR = default_real_dir(Path(__file__).resolve().parents[1])


@pytest.fixture
def render_dom():
    """Load a local HTML file in headless Chromium and return the DOM after its scripts ran
    (flags as this workplace needs them: no sandbox as root, no background network)."""
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium)")

    def render(path) -> str:
        cmd = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
            f"file://{path}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    return render
