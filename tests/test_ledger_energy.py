"""The energy meter against a fake powercap tree and a fake /proc/cpuinfo."""

from __future__ import annotations

import os
import pathlib

import pytest

from heliostat.ledger.book import LedgerBook
from heliostat.ledger.energy import (
    DEFAULT_PER_CORE_W,
    MODEL_REL_UNCERTAINTY_DEFAULT,
    MODEL_REL_UNCERTAINTY_TABLE,
    CpuPowerModel,
    EnergyMeter,
    RaplReader,
    SourceUnavailable,
    cpu_model_name,
    measure_energy,
)

MAX_UJ = 262143328850  # a real package's max_energy_range_uj


def make_rapl(root: pathlib.Path, pkg_uj=1000, dram_uj=None, max_uj=MAX_UJ):
    """A fake /sys/class/powercap with one package (and optionally its dram subdomain)."""
    pkg = root / "intel-rapl:0"
    pkg.mkdir(parents=True)
    (pkg / "name").write_text("package-0\n")
    (pkg / "energy_uj").write_text(f"{pkg_uj}\n")
    (pkg / "max_energy_range_uj").write_text(f"{max_uj}\n")
    core = root / "intel-rapl:0:0"
    core.mkdir()
    (core / "name").write_text("core\n")  # inside the package: must not be added again
    (core / "energy_uj").write_text("5\n")
    (core / "max_energy_range_uj").write_text(f"{max_uj}\n")
    if dram_uj is not None:
        dram = root / "intel-rapl:0:1"
        dram.mkdir()
        (dram / "name").write_text("dram\n")
        (dram / "energy_uj").write_text(f"{dram_uj}\n")
        (dram / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return pkg


def set_uj(domain: pathlib.Path, uj: int) -> None:
    (domain / "energy_uj").write_text(f"{uj}\n")


@pytest.fixture
def cpuinfo(tmp_path):
    p = tmp_path / "cpuinfo"
    p.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\n")
    return p


def test_rapl_delta_and_dram(tmp_path, cpuinfo):
    pkg = make_rapl(tmp_path / "pc", pkg_uj=1_000_000, dram_uj=10)
    dram = tmp_path / "pc" / "intel-rapl:0:1"
    m = EnergyMeter(
        rapl_root=tmp_path / "pc", use_nvml=False, cpuinfo_path=cpuinfo, poll_interval_s=None
    )
    with m:
        set_uj(pkg, 3_500_000)  # +2.5 J on the package
        set_uj(dram, 500_010)  # +0.5 J on DRAM
    r = m.measurement
    assert (r.cpu_source, r.ram_source) == ("rapl", "rapl")
    assert r.cpu_j == 2.5 and r.ram_j == 0.5  # exact: integer µJ / 1e6
    assert r.source == "rapl"
    # Components' uncertainties (5 % each) add in quadrature: 0.05·√(2.5² + 0.5²)/3.
    assert r.rel_uncertainty == pytest.approx(0.05 * (2.5**2 + 0.5**2) ** 0.5 / 3.0)


def test_rapl_wraparound(tmp_path, cpuinfo):
    pkg = make_rapl(tmp_path / "pc", pkg_uj=MAX_UJ - 1_000_000)
    m = EnergyMeter(
        rapl_root=tmp_path / "pc", use_nvml=False, cpuinfo_path=cpuinfo, poll_interval_s=None
    )
    with m:
        set_uj(pkg, 2_000_000)  # wrapped: 1 J before the wrap + 2 J after
    assert m.measurement.cpu_j == 3.0
    assert m.measurement.cpu_source == "rapl"


def test_rapl_two_wraps_seen_by_polling(tmp_path, cpuinfo):
    # Two wraps in one block are only seen if the counter is polled in between; the
    # background thread does that, here we call its poll by hand to be deterministic.
    pkg = make_rapl(tmp_path / "pc", pkg_uj=0, max_uj=10_000_000)
    m = EnergyMeter(
        rapl_root=tmp_path / "pc", use_nvml=False, cpuinfo_path=cpuinfo, poll_interval_s=None
    )
    m.start()
    set_uj(pkg, 8_000_000)
    m._acc.poll()  # +8 J
    set_uj(pkg, 6_000_000)
    m._acc.poll()  # wrap: +2 J + 6 J
    set_uj(pkg, 1_000_000)
    r = m.stop()  # wrap: +4 J + 1 J
    assert r.cpu_j == 21.0


def test_rapl_permission_denied_falls_back(tmp_path, cpuinfo, monkeypatch):
    make_rapl(tmp_path / "pc")
    real = os.open

    def deny(path, *a, **k):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *a, **k)

    # Tests run as root, which ignores file modes; so deny the open itself.
    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(SourceUnavailable, match="permission denied"):
        RaplReader(tmp_path / "pc")
    m = EnergyMeter(rapl_root=tmp_path / "pc", use_nvml=False, cpuinfo_path=cpuinfo)
    assert any("permission denied" in s for s in m.sources_tried)
    with m:
        sum(i * i for i in range(20000))
    r = m.measurement
    assert r.cpu_source == "cpu-model"
    assert r.cpu_j > 0  # a failed read is never 0 J
    assert "EPYC 7763" in r.model_basis


def test_rapl_read_failing_at_stop_falls_back(tmp_path, cpuinfo, monkeypatch):
    make_rapl(tmp_path / "pc")
    m = EnergyMeter(
        rapl_root=tmp_path / "pc", use_nvml=False, cpuinfo_path=cpuinfo, poll_interval_s=None
    )

    def eio(fd, n, off):
        raise OSError(5, "Input/output error")

    with m:
        sum(i * i for i in range(20000))
        monkeypatch.setattr(os, "pread", eio)  # the counter dies during the block
    r = m.measurement
    assert r.cpu_source == "cpu-model" and r.cpu_j > 0
    assert any("cannot read" in n and "CPU model used" in n for n in r.notes)


def test_rapl_stale_counter_is_not_zero_joules(tmp_path, cpuinfo):
    make_rapl(tmp_path / "pc")
    t = iter([0.0, 1.0])  # an injected clock: the block lasts 1 s, the counter never moves
    m = EnergyMeter(
        rapl_root=tmp_path / "pc",
        use_nvml=False,
        cpuinfo_path=cpuinfo,
        poll_interval_s=None,
        clock=lambda: next(t),
    )
    with m:
        sum(i * i for i in range(20000))
    r = m.measurement
    assert r.cpu_source == "cpu-model" and r.cpu_j > 0
    assert any("did not change" in n for n in r.notes)


def test_rapl_stale_counter_short_busy_block_is_not_zero_joules(tmp_path, cpuinfo):
    # A 2 ms block that used CPU time while the counter (updated every ~1 ms) did not move
    # is a failed read too: it must fall back, not record 0 J.
    make_rapl(tmp_path / "pc")
    t = iter([0.0, 0.002])
    m = EnergyMeter(rapl_root=tmp_path / "pc", use_nvml=False, cpuinfo_path=cpuinfo,
                    poll_interval_s=None, clock=lambda: next(t))  # fmt: skip
    with m:
        sum(i * i for i in range(20000))
    r = m.measurement
    assert r.cpu_source == "cpu-model" and r.cpu_j > 0


def test_rapl_reader_reopens_after_close(tmp_path):
    pkg = make_rapl(tmp_path / "pc", pkg_uj=1000)
    reader = RaplReader(tmp_path / "pc")
    assert reader.read() == (1000,)
    reader.close()
    set_uj(pkg, 2000)
    assert reader.read() == (2000,)  # reopened, not a zip() length error
    reader.close()


def test_no_rapl_dir_and_poll_thread(tmp_path, cpuinfo):
    m = EnergyMeter(rapl_root=tmp_path / "absent", use_nvml=False, cpuinfo_path=cpuinfo)
    assert "no powercap directory" in m.sources_tried[0]
    pkg = make_rapl(tmp_path / "pc")
    m2 = EnergyMeter(
        rapl_root=tmp_path / "pc", use_nvml=False, cpuinfo_path=cpuinfo, poll_interval_s=0.001
    )
    with m2:
        set_uj(pkg, 1_001_000)
    assert m2.measurement.cpu_j == 1.0  # polling adds nothing twice


def test_cpu_model_from_cpuinfo(tmp_path, cpuinfo):
    assert cpu_model_name(cpuinfo) == "AMD EPYC 7763 64-Core Processor"
    mod = CpuPowerModel.from_cpuinfo(cpuinfo)
    assert mod.per_core_w == 280.0 / 64
    assert mod.rel_uncertainty == MODEL_REL_UNCERTAINTY_TABLE
    other = tmp_path / "other"
    other.write_text("model name\t: Weird CPU 9000\n")
    mod2 = CpuPowerModel.from_cpuinfo(other, default_per_core_w=12.0)
    assert mod2.per_core_w == 12.0 and mod2.rel_uncertainty == MODEL_REL_UNCERTAINTY_DEFAULT
    mod3 = CpuPowerModel.from_cpuinfo(tmp_path / "missing")
    assert mod3.per_core_w == DEFAULT_PER_CORE_W and mod3.cpu_name == ""
    # E = t_cpu * P_core + RSS_GB * 0.375 W/GB * t_wall: 2 s * 4.375 W, 2 GB * 0.375 * 4 s
    cpu_j, ram_j = mod.energy_j(2.0, 2e9, 4.0)
    assert cpu_j == 8.75 and ram_j == 3.0
    with pytest.raises(ValueError, match="per_core_w"):
        CpuPowerModel(per_core_w=0.0)


def test_model_charges_cpu_time_not_wall_time(cpuinfo):
    # The model charges the process's CPU time at the per-core power: a block that sleeps
    # costs next to nothing however long it takes, a busy one its CPU time. (No ratio of
    # two busy blocks' times: on a shared machine that is a timing test, and it failed.)
    import time

    m = EnergyMeter(rapl_root=None, use_nvml=False, cpuinfo_path=cpuinfo)
    with m:
        time.sleep(0.2)
    idle = m.measurement
    with m:
        t_end = time.process_time() + 0.1
        while time.process_time() < t_end:
            pass
    busy = m.measurement
    for r in (idle, busy):
        assert r.cpu_j == pytest.approx(r.cpu_time_s * 280.0 / 64)
    assert idle.duration_s >= 0.2 and idle.cpu_time_s < 0.02
    assert busy.cpu_time_s >= 0.09  # the meter may read another CPU clock (tick-rounded)
    assert busy.cpu_j > 5.0 * idle.cpu_j


def test_pue_and_validation(cpuinfo):
    m = EnergyMeter(rapl_root=None, use_nvml=False, cpuinfo_path=cpuinfo, pue=1.58)
    with m:
        sum(range(10000))
    r = m.measurement
    assert r.energy.joules == pytest.approx(r.it_energy.joules * 1.58)
    with pytest.raises(ValueError, match="pue"):
        EnergyMeter(rapl_root=None, use_nvml=False, pue=0.9)
    with pytest.raises(RuntimeError, match="without start"):
        m.stop()
    m.start()
    with pytest.raises(RuntimeError, match="already running"):
        m.start()
    m.stop()


def test_decorator_records_into_book(cpuinfo):
    book = LedgerBook(":memory:")

    @measure_energy(
        rapl_root=None,
        use_nvml=False,
        cpuinfo_path=cpuinfo,
        on_measurement=book.recorder("calibration", "classical", heliostat_id="H001"),
    )
    def fit(n):
        return sum(i * i for i in range(n))

    assert fit(1000) == sum(i * i for i in range(1000))
    fit(2000)
    assert len(fit.measurements) == 2
    entries = book.entries()
    assert [e.stage for e in entries] == ["calibration", "calibration"]
    assert entries[0].source == "cpu-model" and entries[0].heliostat_id == "H001"
    assert entries[0].energy_j == pytest.approx(fit.measurements[0].it_energy.joules)
    assert "EPYC 7763" in entries[0].note


class FakeNvml:
    """Stands in for pynvml: two GPUs whose energy counters (mJ) we move by hand."""

    def __init__(self, fail_init=False):
        self.mj = [1000, 5000]
        self.fail_init = fail_init

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self):
        return len(self.mj)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        return self.mj[h]


def test_nvml_adds_gpu_energy(monkeypatch, cpuinfo):
    import sys

    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    m = EnergyMeter(rapl_root=None, cpuinfo_path=cpuinfo)
    assert "nvml: ok" in m.sources_tried
    with m:
        fake.mj[0] += 30_000  # +30 J
        fake.mj[1] += 12_500  # +12.5 J
    r = m.measurement
    assert r.gpu_j == 42.5 and r.gpu_source == "nvml"
    assert r.source == "cpu-model+nvml"
    assert r.it_energy.joules == pytest.approx(r.cpu_j + r.ram_j + 42.5)


def test_nvml_missing_driver_is_recorded(monkeypatch, cpuinfo):
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(fail_init=True))
    m = EnergyMeter(rapl_root=None, cpuinfo_path=cpuinfo)
    assert any("NVML: NVML Shared Library Not Found" in s for s in m.sources_tried)
    with m:
        pass
    assert m.measurement.gpu_source == "none"
