"""Calibrate every heliostat of a field in one call, in parallel.

Each heliostat's fit is independent, so the batch is split into chunks of heliostats and
the chunks run on a :class:`concurrent.futures.ProcessPoolExecutor` (one machine) or on
Dask (``backend="dask"``, the ``[dist]`` extra; a cluster through a
``distributed.Client``, else Dask's local process scheduler). ``"sequential"`` runs in
this process (the baseline of ``bench/calibration.py``). All backends return the same
results.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from heliostat.calibration.crossval import with_cross_validation
from heliostat.calibration.fit import FitResult, fit_heliostat, resolve_names
from heliostat.calibration.observations import Observations
from heliostat.calibration.selection import CalibrationOptions, calibrate_heliostat
from heliostat.errors import CalibrationError
from heliostat.kinematics import HeliostatKinematics, KinematicErrors

BACKENDS = ("sequential", "process", "dask")


@dataclass(frozen=True, slots=True)
class Job:
    """One heliostat's fit: everything a worker process needs (picklable)."""

    kinematics: HeliostatKinematics
    observations: Observations
    names: tuple[str, ...]
    residual: str = "angle"
    loo: str = "hat"
    kfold: int | None = None
    select: bool = False


def run_job(job: Job) -> FitResult:
    """Fit one heliostat; any failure becomes ``success=False`` with the reason.

    ``job.select``: the parameter set is chosen by nested cross-validation
    (:func:`~heliostat.calibration.selection.calibrate_heliostat`; ``job.names`` unused),
    the result's ``selection`` says which and why. Else ``job.names`` is fitted as given.
    """
    obs = job.observations
    try:
        if job.select:
            opt = CalibrationOptions(None, job.residual, job.loo, job.kfold)
            return calibrate_heliostat(job.kinematics, obs, opt).fit
        r = fit_heliostat(job.kinematics, obs, job.names, job.residual)
        return with_cross_validation(job.kinematics, obs, r, job.loo, job.kfold, job.residual)
    except (CalibrationError, ValueError, ArithmeticError) as exc:
        return FitResult(
            obs.heliostat_id,
            job.kinematics.drive,
            job.names,
            KinematicErrors.zeros(job.kinematics.drive),
            {},
            False,
            f"{type(exc).__name__}: {exc}",
            n_points=len(obs),
        )


def run_chunk(jobs: Sequence[Job]) -> list[FitResult]:
    """Fit a chunk of heliostats (the unit of work sent to a worker)."""
    return [run_job(j) for j in jobs]


def make_jobs(
    kinematics: Mapping[str, HeliostatKinematics],
    observations: Mapping[str, Observations],
    groups: Sequence[str] | None = None,
    residual: str = "angle",
    loo: str = "hat",
    kfold: int | None = None,
    select: bool = False,
) -> list[Job]:
    """Jobs for every heliostat that has observations (``select``: each chooses its
    parameter set, :attr:`Job.select`; ``groups`` is then unused).

    Raises
    ------
    KeyError
        For observations of a heliostat the kinematics do not know.
    """
    jobs = []
    for hid, obs in observations.items():
        if hid not in kinematics:
            raise KeyError(f"observations of heliostat {hid!r}, which is not in the field")
        kin = kinematics[hid]
        names = resolve_names(kin.drive, groups)
        jobs.append(Job(kin, obs, names, residual, loo, kfold, select))
    return jobs


def _chunks(jobs: list[Job], n: int) -> list[list[Job]]:
    size = max(1, -(-len(jobs) // n))
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def calibrate_field(
    jobs: Sequence[Job],
    backend: str = "process",
    max_workers: int | None = None,
    chunks_per_worker: int = 4,
    client=None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, FitResult]:
    """Fit every job; results keyed by heliostat id, in job order.

    Parameters
    ----------
    jobs : sequence of Job
        From :func:`make_jobs`.
    backend : {"process", "dask", "sequential"}
    max_workers : int, optional
        Worker processes (default: ``os.cpu_count()``).
    chunks_per_worker : int
        Chunks per worker (a few, so a slow chunk does not leave workers idle).
    client : distributed.Client, optional
        Dask cluster to run on (``backend="dask"`` only).
    progress : callable, optional
        ``progress(done, total)`` in fits: after each fit (sequential), each chunk
        (process), or at the end (dask).

    Raises
    ------
    ImportError
        For ``backend="dask"`` without Dask installed (install the ``[dist]`` extra).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    jobs = list(jobs)
    workers = max_workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")

    def tick(done: int) -> None:
        if progress is not None:
            progress(done, len(jobs))

    results: list[FitResult] = []
    if backend == "sequential" or not jobs:
        for j in jobs:
            results.append(run_job(j))
            tick(len(results))
    elif backend == "process":
        chunks = _chunks(jobs, workers * chunks_per_worker)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for chunk in pool.map(run_chunk, chunks):
                results += chunk
                tick(len(results))
    else:
        results = _run_dask(jobs, workers, chunks_per_worker, client)
        tick(len(results))
    return {r.heliostat_id: r for r in results}


def _run_dask(jobs: list[Job], workers: int, chunks_per_worker: int, client) -> list[FitResult]:
    try:
        import dask
    except ImportError:
        raise ImportError(
            "backend 'dask' needs Dask: pip install 'heliostat-calibration[dist]'"
        ) from None
    chunks = _chunks(jobs, workers * chunks_per_worker)
    if client is not None:
        futures = client.map(run_chunk, chunks, pure=False)
        parts = client.gather(futures)
    else:
        tasks = [dask.delayed(run_chunk)(c) for c in chunks]
        parts = dask.compute(*tasks, scheduler="processes", num_workers=workers)
    return [r for chunk in parts for r in chunk]
