"""Overhead of the energy meter, against the same work unmetered (baseline, same run).

Prints JSON: per-block cost of entering and leaving the meter (empty block) for the CPU
model alone and for a fake RAPL tree (file reads) with and without the poll thread; and
a ~0.1 s calibration-sized workload timed bare and metered, interleaved.

    .venv/bin/python bench/ledger_overhead.py
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from heliostat.ledger.energy import EnergyMeter


def fake_rapl(root: Path) -> None:
    d = root / "intel-rapl:0"
    d.mkdir(parents=True)
    (d / "name").write_text("package-0\n")
    (d / "energy_uj").write_text("123456789\n")
    (d / "max_energy_range_uj").write_text("262143328850\n")


def per_block_us(meter: EnergyMeter, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        with meter:
            pass
    return (time.perf_counter() - t0) / n * 1e6


def empty_loop_us(n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        pass
    return (time.perf_counter() - t0) / n * 1e6


def work() -> int:
    return sum(i * i for i in range(400_000))


def main() -> None:
    n = 2000
    out: dict = {"blocks": n}
    out["baseline_empty_loop_us"] = empty_loop_us(n)
    real = EnergyMeter()
    out["source_on_this_machine"] = real.sources_tried
    model = EnergyMeter(rapl_root=None, use_nvml=False)
    out["cpu_model_per_block_us"] = per_block_us(model, n)
    with tempfile.TemporaryDirectory() as tmp:
        fake_rapl(Path(tmp))
        rapl = EnergyMeter(rapl_root=tmp, use_nvml=False, poll_interval_s=None)
        out["fake_rapl_per_block_us"] = per_block_us(rapl, n)
        rapl_t = EnergyMeter(rapl_root=tmp, use_nvml=False, poll_interval_s=60.0)
        out["fake_rapl_with_poll_thread_per_block_us"] = per_block_us(rapl_t, n)

    bare, metered, energies = [], [], []
    for _ in range(7):  # interleaved so drift from other users hits both alike
        t0 = time.perf_counter()
        work()
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with model:
            work()
        metered.append(time.perf_counter() - t0)
        energies.append(model.measurement.it_energy.joules)
    b, m = statistics.median(bare), statistics.median(metered)
    out["workload_bare_s_median"] = b
    out["workload_metered_s_median"] = m
    out["workload_overhead_rel"] = (m - b) / b
    out["meter_cost_rel_to_workload"] = out["cpu_model_per_block_us"] * 1e-6 / b
    out["workload_energy_j_median"] = statistics.median(energies)
    out["meter_energy_per_block_j"] = (
        out["cpu_model_per_block_us"] * 1e-6 * model.cpu_model.per_core_w
    )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
