"""An energy meter around a block of code: context manager and decorator.

Sources, best first; the one used is always recorded with the figure:

1. **RAPL** (Linux powercap, ``<root>/intel-rapl:N/energy_uj``): the package (CPU) and
   DRAM counters in µJ. A counter wraps at ``max_energy_range_uj``; a delta with
   ``end < start`` is taken as one wrap. A background poll (``poll_interval_s``) keeps
   long blocks from wrapping twice unseen. RAPL counts the **whole socket**, every process
   on it, not only ours. On kernels since 5.10 ``energy_uj`` is readable by root only; a
   permission error makes RAPL unavailable and the next source is used.
2. **NVML** (``pynvml``, only if importable and a GPU is present): the GPU's total-energy
   counter in mJ (Volta and newer). It adds a GPU term to whichever CPU source is used.
3. **CPU model** (always available): process CPU time (all threads, and waited-for
   children) × the per-core power of the CPU (its TDP divided by its physical cores, from
   :data:`TDP_TABLE` by the ``model name`` in ``/proc/cpuinfo``, or a configurable
   default) + resident memory × 0.375 W/GB × wall time. Its relative standard uncertainty
   is stated with each figure (see :class:`CpuPowerModel`).

A failed read is never recorded as 0 J: if RAPL cannot be read at the end of a block, or
reads no change over a block longer than its update period, the CPU model gives the figure
and the measurement says so in ``notes``.

All figures are IT energy; the facility energy multiplies by the PUE (``pue``). The
relative uncertainties of the components (RAPL 5 %, NVML 5 %, model 50-70 %) are combined
in quadrature, as independent.
"""

from __future__ import annotations

import functools
import math
import os
import re
import resource
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heliostat.ledger.carbon import Energy

#: RAPL counters update about every 1 ms; a block longer than a few updates (or one that
#: used CPU time at all) that reads no change is a failed read, not zero energy. [s]
RAPL_STALE_AFTER_S = 0.005
#: Relative standard uncertainty of RAPL energy against a wall-plug meter (Khan et al.,
#: "RAPL in Action", ACM TOMPECS 3(2), 2018, doi:10.1145/3177754: errors of a few %). [-]
RAPL_REL_UNCERTAINTY = 0.05
#: NVML power/energy accuracy (NVIDIA quotes ±5 % of the reading). [-]
NVML_REL_UNCERTAINTY = 0.05
#: Memory power per GB resident (codecarbon's constant: 3 W per 8 GB of DDR4). [W GB⁻¹]
RAM_W_PER_GB = 3.0 / 8.0


# ----------------------------------------------------------------------------- CPU model
@dataclass(frozen=True, slots=True)
class TdpEntry:
    """One row of the TDP table.

    Attributes
    ----------
    pattern : str
        Regular expression matched (case-insensitive, ``re.search``) against the
        ``model name`` of ``/proc/cpuinfo``.
    tdp_w : float
        Thermal design power of the package. [W]
    cores : int
        Physical cores of the package.
    note : str
        Source or caveat.
    """

    pattern: str
    tdp_w: float
    cores: int
    note: str = "vendor datasheet"


#: Vendor TDPs (first match wins; specific models before families).
TDP_TABLE: tuple[TdpEntry, ...] = (
    TdpEntry(r"EPYC 7763", 280.0, 64),
    TdpEntry(r"EPYC 7742", 225.0, 64),
    TdpEntry(r"EPYC 7B13", 280.0, 64, "cloud variant of the 7763 (assumed)"),
    TdpEntry(r"EPYC 9654", 360.0, 96),
    TdpEntry(r"EPYC 7R13", 280.0, 48, "cloud variant (assumed)"),
    TdpEntry(r"Xeon.*Platinum 8375C", 300.0, 32),
    TdpEntry(r"Xeon.*Platinum 8259CL", 210.0, 24),
    TdpEntry(r"Xeon.*Gold 6248", 150.0, 20),
    TdpEntry(r"Core\(TM\) i7-8700", 65.0, 6),
    TdpEntry(r"Core\(TM\) i9-9900K", 95.0, 8),
    TdpEntry(r"Core\(TM\) i7-1165G7", 28.0, 4),
    TdpEntry(r"Ryzen 9 5950X", 105.0, 16),
    TdpEntry(r"Ryzen 7 5800X", 105.0, 8),
    TdpEntry(r"Cortex-A72", 6.0, 4, "Raspberry Pi 4 board under load, ~6 W (approx.)"),
    # Families, when a VM hides the model number: the Milan 7763's per-core figure.
    TdpEntry(r"AMD EPYC", 280.0, 64, "family only (model hidden): EPYC 7763 per-core"),
    TdpEntry(r"Intel.*Xeon", 205.0, 28, "family only: Xeon Platinum 8280 per-core"),
)

#: Per-core power when the CPU is not in the table. [W]
DEFAULT_PER_CORE_W = 10.0
#: Relative standard uncertainty of the model: CPU in the table / not in it. A busy core
#: draws roughly 0.5-1.5 x TDP/cores (uncore and idle cores share the TDP; turbo exceeds
#: it), hence +-50 %; an unknown CPU spans ~2-20 W per core, hence +-70 %. [-]
MODEL_REL_UNCERTAINTY_TABLE = 0.5
MODEL_REL_UNCERTAINTY_DEFAULT = 0.7


@dataclass(frozen=True, slots=True)
class CpuPowerModel:
    """The fallback model: busy CPU time × per-core power + memory × time.

    ``E = t_cpu · P_core + RSS_GB · 0.375 W/GB · t_wall``. Idle power of the machine is not
    charged to the code (it would be drawn anyway); RAPL, by contrast, counts it.

    Attributes
    ----------
    per_core_w : float
        Power of one fully busy core. [W]
    ram_w_per_gb : float
        Memory power per resident GB. [W GB⁻¹]
    rel_uncertainty : float
        Relative standard uncertainty of the figure. [-]
    cpu_name : str
        The ``model name`` it was built from.
    basis : str
        How ``per_core_w`` was obtained.
    """

    per_core_w: float
    ram_w_per_gb: float = RAM_W_PER_GB
    rel_uncertainty: float = MODEL_REL_UNCERTAINTY_DEFAULT
    cpu_name: str = ""
    basis: str = "configured"

    def __post_init__(self) -> None:
        for name in ("per_core_w", "ram_w_per_gb", "rel_uncertainty"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"CpuPowerModel.{name} must be a finite number >= 0, got {v!r}")
        if self.per_core_w <= 0:
            raise ValueError(f"CpuPowerModel.per_core_w must be > 0, got {self.per_core_w!r}")

    @classmethod
    def from_cpuinfo(
        cls,
        cpuinfo_path: str | Path = "/proc/cpuinfo",
        table: tuple[TdpEntry, ...] = TDP_TABLE,
        default_per_core_w: float = DEFAULT_PER_CORE_W,
    ) -> CpuPowerModel:
        """Build the model from the CPU's ``model name``.

        Parameters
        ----------
        cpuinfo_path : path
            A ``/proc/cpuinfo``-format file (a parameter so tests can fake it).
        table : tuple of TdpEntry
            TDP table; first match wins.
        default_per_core_w : float
            Per-core power when nothing matches (or the file is unreadable). [W]
        """
        name = cpu_model_name(cpuinfo_path)
        for entry in table:
            if name and re.search(entry.pattern, name, flags=re.IGNORECASE):
                return cls(
                    per_core_w=entry.tdp_w / entry.cores,
                    rel_uncertainty=MODEL_REL_UNCERTAINTY_TABLE,
                    cpu_name=name,
                    basis=f"TDP {entry.tdp_w:g} W / {entry.cores} cores ({entry.note}); "
                    f"matched {entry.pattern!r}",
                )
        return cls(
            per_core_w=float(default_per_core_w),
            rel_uncertainty=MODEL_REL_UNCERTAINTY_DEFAULT,
            cpu_name=name,
            basis=f"default {default_per_core_w:g} W per core (CPU {name!r} not in table)",
        )

    def energy_j(self, cpu_time_s: float, rss_bytes: float, wall_s: float) -> tuple[float, float]:
        """(CPU J, RAM J) for a block. [s], [B], [s]"""
        cpu = max(cpu_time_s, 0.0) * self.per_core_w
        ram = max(rss_bytes, 0.0) / 1e9 * self.ram_w_per_gb * max(wall_s, 0.0)
        return cpu, ram


def cpu_model_name(cpuinfo_path: str | Path = "/proc/cpuinfo") -> str:
    """The first ``model name`` (x86) or ``Model``/``CPU part`` line of a cpuinfo file, or ""."""
    try:
        text = Path(cpuinfo_path).read_text(errors="replace")
    except OSError:
        return ""
    for key in ("model name", "Model", "Hardware"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, flags=re.MULTILINE)
        if m:
            return m.group(1).strip()
    return ""


def _cpu_time_s() -> float:
    """CPU time of this process (all threads) and its waited-for children. [s]"""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


class _RssReader:
    """Resident set size of this process from ``<proc_root>/self/statm``. [B]

    The file stays open and is re-read with ``pread`` (a few µs instead of ~20-80 µs for
    open + read); if it cannot be opened, the peak RSS from ``getrusage`` is used.
    """

    def __init__(self, proc_root: str | Path = "/proc") -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        try:
            self.fd: int | None = os.open(Path(proc_root) / "self" / "statm", os.O_RDONLY)
        except OSError:
            self.fd = None

    def __call__(self) -> float:
        if self.fd is not None:
            try:
                return float(int(os.pread(self.fd, 128, 0).split()[1]) * self.page)
            except (OSError, ValueError, IndexError):
                pass
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024.0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.close()


# ----------------------------------------------------------------------------- RAPL
class SourceUnavailable(OSError):
    """An energy source cannot be read; the message says why."""


@dataclass(frozen=True, slots=True)
class RaplDomain:
    """One RAPL counter.

    Attributes
    ----------
    path : Path
        Its powercap directory.
    name : str
        Its ``name`` file ("package-0", "dram", "core", ...).
    kind : str
        "cpu" (package) or "ram" (dram).
    max_range_uj : int
        ``max_energy_range_uj``: the counter wraps after this. [µJ]
    """

    path: Path
    name: str
    kind: str
    max_range_uj: int


class RaplReader:
    """Reads the package and DRAM RAPL counters under a powercap root.

    Parameters
    ----------
    root : path
        The powercap directory (``/sys/class/powercap``); a parameter so tests use a fake
        tree.

    Raises
    ------
    SourceUnavailable
        No package domain, or a counter cannot be read (e.g. permission denied).
    """

    def __init__(self, root: str | Path = "/sys/class/powercap") -> None:
        self.root = Path(root)
        self.domains = self._discover()
        self.read()  # a first read proves we have permission

    def _discover(self) -> tuple[RaplDomain, ...]:
        if not self.root.is_dir():
            raise SourceUnavailable(f"RAPL: no powercap directory {self.root}")
        out: list[RaplDomain] = []
        # intel-rapl:N is a package; intel-rapl:N:M its subdomains (core, uncore, dram).
        # The package counter includes core and uncore, so only packages and dram count.
        for d in sorted(self.root.glob("intel-rapl:*")):
            try:
                name = (d / "name").read_text().strip()
            except OSError:
                continue
            if name.startswith("package"):
                kind = "cpu"
            elif name == "dram":
                kind = "ram"
            else:
                continue  # core/uncore are inside the package; psys would double-count
            try:
                max_range = int((d / "max_energy_range_uj").read_text().strip())
            except (OSError, ValueError) as exc:
                raise SourceUnavailable(
                    f"RAPL: cannot read {d}/max_energy_range_uj: {exc}"
                ) from None
            if max_range <= 0:
                raise SourceUnavailable(f"RAPL: {d}/max_energy_range_uj is {max_range}")
            out.append(RaplDomain(d, name, kind, max_range))
        if not any(dom.kind == "cpu" for dom in out):
            raise SourceUnavailable(f"RAPL: no package domain under {self.root}")
        return tuple(out)

    def _open(self) -> list[int]:
        fds = []
        for dom in self.domains:
            p = dom.path / "energy_uj"
            try:
                fds.append(os.open(p, os.O_RDONLY))
            except PermissionError:
                for fd in fds:
                    os.close(fd)
                raise SourceUnavailable(
                    f"RAPL: permission denied reading {p} (root only since Linux 5.10)"
                ) from None
            except OSError as exc:
                for fd in fds:
                    os.close(fd)
                raise SourceUnavailable(f"RAPL: cannot read {p}: {exc}") from None
        return fds

    def read(self) -> tuple[int, ...]:
        """Current counters, one per domain. [µJ]

        The ``energy_uj`` files stay open and are re-read with ``pread`` at offset 0
        (sysfs regenerates the value on each read), ~2 µs instead of ~50-100 µs.
        """
        if not hasattr(self, "_fds"):
            self._fds = self._open()
        vals = []
        for dom, fd in zip(self.domains, self._fds, strict=True):
            try:
                vals.append(int(os.pread(fd, 64, 0).strip()))
            except PermissionError:
                raise SourceUnavailable(
                    f"RAPL: permission denied reading {dom.path / 'energy_uj'} "
                    "(root only since Linux 5.10)"
                ) from None
            except (OSError, ValueError) as exc:
                raise SourceUnavailable(
                    f"RAPL: cannot read {dom.path / 'energy_uj'}: {exc}"
                ) from None
        return tuple(vals)

    def close(self) -> None:
        """Close the counter files."""
        for fd in getattr(self, "_fds", []):
            os.close(fd)
        if hasattr(self, "_fds"):
            del self._fds  # a later read() reopens the counters

    def __del__(self) -> None:
        self.close()

    def delta_uj(self, start: tuple[int, ...], end: tuple[int, ...]) -> tuple[int, ...]:
        """Per-domain energy between two reads, one wrap-around allowed. [µJ]"""
        out = []
        for dom, a, b in zip(self.domains, start, end, strict=True):
            out.append(b - a if b >= a else dom.max_range_uj - a + b)
        return tuple(out)


class _RaplAccumulator:
    """Sums RAPL deltas over polls so that a long block cannot wrap twice unseen."""

    def __init__(self, reader: RaplReader) -> None:
        self.reader = reader
        self.lock = threading.Lock()
        self.last = reader.read()
        self.total = [0] * len(reader.domains)

    def poll(self) -> None:
        with self.lock:
            now = self.reader.read()
            for i, d in enumerate(self.reader.delta_uj(self.last, now)):
                self.total[i] += d
            self.last = now

    def joules(self) -> tuple[float, float]:
        cpu = sum(
            t for t, d in zip(self.total, self.reader.domains, strict=True) if d.kind == "cpu"
        )
        ram = sum(
            t for t, d in zip(self.total, self.reader.domains, strict=True) if d.kind == "ram"
        )
        return cpu / 1e6, ram / 1e6


# ----------------------------------------------------------------------------- NVML
class NvmlReader:
    """Total GPU energy of all NVIDIA devices via ``pynvml`` (if importable).

    Raises
    ------
    SourceUnavailable
        ``pynvml`` missing, no driver, no device, or no energy counter.
    """

    def __init__(self) -> None:
        try:
            import pynvml  # type: ignore[import-not-found]
        except ImportError:
            raise SourceUnavailable("NVML: pynvml is not installed") from None
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
            n = pynvml.nvmlDeviceGetCount()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
        except Exception as exc:  # noqa: BLE001 - pynvml raises its own NVMLError tree
            raise SourceUnavailable(f"NVML: {exc}") from None
        if not self.handles:
            raise SourceUnavailable("NVML: no GPU")
        self.read()

    def read(self) -> int:
        """Sum of the devices' total-energy counters. [mJ]"""
        try:
            return sum(int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.handles)
        except Exception as exc:  # noqa: BLE001
            raise SourceUnavailable(f"NVML: energy counter unreadable: {exc}") from None


# ----------------------------------------------------------------------------- meter
@dataclass(frozen=True, slots=True)
class Measurement:
    """The energy of one metered block.

    Attributes
    ----------
    cpu_j, ram_j, gpu_j : float
        IT energy by component. [J]
    duration_s : float
        Wall time. [s]
    cpu_time_s : float
        Process CPU time (threads and waited children). [s]
    cpu_source, ram_source, gpu_source : str
        "rapl", "nvml", "cpu-model", or "none" (gpu only: no GPU).
    rel_uncertainty : float
        Relative standard uncertainty of ``it_energy``. [-]
    pue : float
        Power usage effectiveness applied by ``energy``. [-]
    notes : tuple of str
        Fallbacks taken and why.
    model_basis : str
        How the CPU model's per-core power was chosen (when it was used).
    """

    cpu_j: float
    ram_j: float
    gpu_j: float
    duration_s: float
    cpu_time_s: float
    cpu_source: str
    ram_source: str
    gpu_source: str
    rel_uncertainty: float
    pue: float = 1.0
    notes: tuple[str, ...] = ()
    model_basis: str = ""

    @property
    def it_energy(self) -> Energy:
        """Energy drawn by the computer (no PUE)."""
        return Energy(self.cpu_j + self.ram_j + self.gpu_j)

    @property
    def energy(self) -> Energy:
        """Facility energy: IT energy × PUE."""
        return Energy((self.cpu_j + self.ram_j + self.gpu_j) * self.pue)

    @property
    def source(self) -> str:
        """Sources used, e.g. "rapl", "cpu-model", "rapl+nvml"."""
        parts = [self.cpu_source]
        if self.ram_source != self.cpu_source:
            parts.append(f"ram:{self.ram_source}")
        if self.gpu_source != "none":
            parts.append(self.gpu_source)
        return "+".join(parts)


class EnergyMeter:
    """Measure the energy of a block of code; reusable, one block at a time.

    Use as a context manager (``with EnergyMeter() as m: ...; m.measurement``), through
    :meth:`start` / :meth:`stop`, or as a decorator (:func:`measure_energy`).

    Parameters
    ----------
    rapl_root : path or None
        Powercap root for RAPL; None disables RAPL.
    use_nvml : bool
        Try NVML (pynvml) for GPUs.
    cpu_model : CpuPowerModel, optional
        Fallback model; default :meth:`CpuPowerModel.from_cpuinfo` on ``cpuinfo_path``.
    cpuinfo_path, proc_root : path
        Where to read the CPU name and this process's memory (parameters for tests).
    pue : float
        Power usage effectiveness, >= 1. [-]
    poll_interval_s : float or None
        While a block runs, poll RAPL this often so no counter wraps twice unseen
        (a package at 200 W wraps a 262 J range every ~22 min). None: no thread.
    clock : callable
        Wall clock in seconds (``time.perf_counter``); injectable for tests.

    Notes
    -----
    Sources are probed once, at construction; ``sources_tried`` says what was found.
    """

    def __init__(
        self,
        *,
        rapl_root: str | Path | None = "/sys/class/powercap",
        use_nvml: bool = True,
        cpu_model: CpuPowerModel | None = None,
        cpuinfo_path: str | Path = "/proc/cpuinfo",
        proc_root: str | Path = "/proc",
        pue: float = 1.0,
        poll_interval_s: float | None = 60.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not (isinstance(pue, int | float) and math.isfinite(pue) and pue >= 1.0):
            raise ValueError(f"pue must be a finite number >= 1, got {pue!r}")
        if poll_interval_s is not None and not poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be > 0 or None, got {poll_interval_s!r}")
        self.pue = float(pue)
        self.poll_interval_s = poll_interval_s
        self.clock = clock
        self._rss = _RssReader(proc_root)
        self.cpu_model = cpu_model or CpuPowerModel.from_cpuinfo(cpuinfo_path)
        self.sources_tried: list[str] = []
        self.rapl: RaplReader | None = None
        if rapl_root is not None:
            try:
                self.rapl = RaplReader(rapl_root)
                self.sources_tried.append("rapl: ok")
            except SourceUnavailable as exc:
                self.sources_tried.append(str(exc))
        self.nvml: NvmlReader | None = None
        if use_nvml:
            try:
                self.nvml = NvmlReader()
                self.sources_tried.append("nvml: ok")
            except SourceUnavailable as exc:
                self.sources_tried.append(str(exc))
        self.sources_tried.append(f"cpu-model: {self.cpu_model.basis}")
        self.measurement: Measurement | None = None
        self._running = False
        self._acc: _RaplAccumulator | None = None
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    # -- protocol ------------------------------------------------------------------
    def __enter__(self) -> EnergyMeter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Begin a block."""
        if self._running:
            raise RuntimeError("EnergyMeter is already running; nest separate meters instead")
        self._running = True
        self._notes: list[str] = []
        self._acc: _RaplAccumulator | None = None
        self._gpu0: int | None = None
        if self.rapl is not None:
            try:
                self._acc = _RaplAccumulator(self.rapl)
            except SourceUnavailable as exc:
                self._notes.append(f"{exc}; CPU model used")
        if self.nvml is not None:
            try:
                self._gpu0 = self.nvml.read()
            except SourceUnavailable as exc:
                self._notes.append(f"{exc}; GPU not counted")
        if (
            self._acc is not None
            and self.poll_interval_s is not None
            and (self._thread is None or not self._thread.is_alive())
        ):
            # One poller per meter, kept between blocks (starting a thread per block
            # would cost ~100-300 µs each time).
            self._thread = threading.Thread(
                target=_poll_loop,
                args=(weakref.ref(self), self._closed, self.poll_interval_s),
                daemon=True,
            )
            self._thread.start()
        self._rss0 = self._rss()
        self._cpu0 = _cpu_time_s()
        self._t0 = self.clock()

    def close(self) -> None:
        """Stop the poller thread and close the counter files."""
        self._closed.set()
        if self.rapl is not None:
            self.rapl.close()
        self._rss.close()

    def stop(self) -> Measurement:
        """End the block and return (and keep in ``measurement``) its energy."""
        if not self._running:
            raise RuntimeError("EnergyMeter.stop() called without start()")
        t1 = self.clock()
        cpu1 = _cpu_time_s()
        self._running = False
        duration = t1 - self._t0
        cpu_time = cpu1 - self._cpu0
        rss = 0.5 * (self._rss0 + self._rss())
        notes = list(self._notes)
        model_cpu_j, model_ram_j = self.cpu_model.energy_j(cpu_time, rss, duration)

        cpu_j, ram_j = model_cpu_j, model_ram_j
        cpu_src = ram_src = "cpu-model"
        if self._acc is not None:
            try:
                self._acc.poll()
                r_cpu, r_ram = self._acc.joules()
                has_ram = any(d.kind == "ram" for d in self._acc.reader.domains)
                busy = cpu_time > 0 or duration > RAPL_STALE_AFTER_S
                if r_cpu <= 0 and busy:
                    notes.append(
                        f"RAPL package counter did not change in {duration:.3g} s "
                        "(stale or unreadable); CPU model used"
                    )
                else:
                    cpu_j, cpu_src = r_cpu, "rapl"
                    if has_ram and r_ram <= 0 and busy:
                        notes.append("RAPL DRAM counter did not change; RAM model used")
                    elif has_ram:
                        ram_j, ram_src = r_ram, "rapl"
            except SourceUnavailable as exc:
                notes.append(f"{exc}; CPU model used")
        gpu_j, gpu_src = 0.0, "none"
        if self._gpu0 is not None and self.nvml is not None:
            try:
                gpu_j, gpu_src = (self.nvml.read() - self._gpu0) / 1e3, "nvml"
            except SourceUnavailable as exc:
                notes.append(f"{exc}; GPU not counted")

        def u(src: str) -> float:
            return {
                "rapl": RAPL_REL_UNCERTAINTY,
                "nvml": NVML_REL_UNCERTAINTY,
                "cpu-model": self.cpu_model.rel_uncertainty,
            }.get(src, 0.0)

        total = cpu_j + ram_j + gpu_j
        var = (cpu_j * u(cpu_src)) ** 2 + (ram_j * u(ram_src)) ** 2 + (gpu_j * u(gpu_src)) ** 2
        rel = math.sqrt(var) / total if total > 0 else u(cpu_src)
        self.measurement = Measurement(
            cpu_j=cpu_j,
            ram_j=ram_j,
            gpu_j=gpu_j,
            duration_s=duration,
            cpu_time_s=cpu_time,
            cpu_source=cpu_src,
            ram_source=ram_src,
            gpu_source=gpu_src,
            rel_uncertainty=rel,
            pue=self.pue,
            notes=tuple(notes),
            model_basis=self.cpu_model.basis if "cpu-model" in (cpu_src, ram_src) else "",
        )
        return self.measurement


def _poll_loop(ref: weakref.ref, closed: threading.Event, interval_s: float) -> None:
    """Poll a meter's RAPL accumulator while a block runs; ends with the meter."""
    while not closed.wait(interval_s):
        meter = ref()
        if meter is None:
            return
        acc = meter._acc if meter._running else None
        del meter  # hold no reference while sleeping, so the meter can be collected
        if acc is None:
            continue
        try:
            acc.poll()
        except SourceUnavailable:
            continue  # stop() reads again and falls back if it still fails


@dataclass(slots=True)
class _Collected:
    measurements: list[Measurement] = field(default_factory=list)


def measure_energy(
    func: Callable[..., Any] | None = None,
    *,
    meter: EnergyMeter | None = None,
    on_measurement: Callable[[Measurement], None] | None = None,
    **meter_kwargs: Any,
):
    """Decorator: meter every call of a function.

    The wrapper keeps each call's :class:`Measurement` in ``wrapper.measurements`` (a
    list) and passes it to ``on_measurement`` (e.g. a ledger book's recorder).

    Examples
    --------
    >>> @measure_energy(rapl_root=None, use_nvml=False)
    ... def work():
    ...     return sum(range(1000))
    >>> work()
    499500
    >>> work.measurements[-1].cpu_source
    'cpu-model'
    """

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        m = meter or EnergyMeter(**meter_kwargs)
        store = _Collected()

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            m.start()
            try:
                return f(*args, **kwargs)
            finally:
                meas = m.stop()
                store.measurements.append(meas)
                if on_measurement is not None:
                    on_measurement(meas)

        wrapper.measurements = store.measurements  # type: ignore[attr-defined]
        wrapper.meter = m  # type: ignore[attr-defined]
        return wrapper

    return deco(func) if func is not None else deco
