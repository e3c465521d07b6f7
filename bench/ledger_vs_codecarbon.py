"""Our energy meter and CodeCarbon's offline tracker around the same workload.

CodeCarbon is not a dependency of the project: ``.venv/bin/pip install codecarbon`` first.
Both meters wrap the same block (ours inside CodeCarbon's, so CodeCarbon also counts our
meter's cost). Prints JSON with the two energies (kWh), each one's source/mode, and the
emissions under the US preset (0.954 lb/kWh) for both, plus CodeCarbon's own figure with
its own US intensity.

    .venv/bin/python bench/ledger_vs_codecarbon.py [--seconds 20] [--mode machine|process]
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from heliostat.ledger.carbon import GRID_PRESETS, Energy
from heliostat.ledger.energy import EnergyMeter


def workload(seconds: float) -> int:
    """Single-threaded CPU work (one busy core) for about ``seconds``."""
    t_end = time.perf_counter() + seconds
    acc = 0
    while time.perf_counter() < t_end:
        acc += sum(i * i for i in range(20_000))
    return acc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--mode", default="process", choices=["process", "machine"])
    args = ap.parse_args()
    try:
        from codecarbon import OfflineEmissionsTracker
    except ImportError:
        print(json.dumps({"error": "codecarbon not installed (pip install codecarbon)"}))
        return
    import codecarbon

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    tracker = OfflineEmissionsTracker(
        country_iso_code="USA",
        measure_power_secs=1,
        save_to_file=False,
        log_level="error",
        tracking_mode=args.mode,
    )
    meter = EnergyMeter()
    tracker.start()
    with meter:
        workload(args.seconds)
    cc_kg = tracker.stop()
    d = tracker.final_emissions_data
    ours = meter.measurement
    us = GRID_PRESETS["us"]
    cc_energy = Energy.from_kwh(d.energy_consumed)
    out = {
        "workload_s": args.seconds,
        "ours": {
            "energy_kwh": ours.energy.kwh,
            "cpu_kwh": ours.cpu_j / 3.6e6,
            "ram_kwh": ours.ram_j / 3.6e6,
            "source": ours.source,
            "basis": ours.model_basis,
            "rel_uncertainty": ours.rel_uncertainty,
            "cpu_time_s": ours.cpu_time_s,
            "duration_s": ours.duration_s,
            "kg_co2e_us_preset": us.emissions(ours.energy).kg_co2e,
        },
        "codecarbon": {
            "version": codecarbon.__version__,
            "tracking_mode": args.mode,
            "energy_kwh": d.energy_consumed,
            "cpu_kwh": d.cpu_energy,
            "ram_kwh": d.ram_energy,
            "cpu_power_w": d.cpu_power,
            "ram_power_w": d.ram_power,
            "cpu_model": d.cpu_model,
            "duration_s": d.duration,
            "kg_co2e_own_usa_intensity": cc_kg,
            "kg_co2e_us_preset": us.emissions(cc_energy).kg_co2e,
        },
        "ratio_codecarbon_to_ours": d.energy_consumed / ours.energy.kwh,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
