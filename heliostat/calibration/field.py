"""Calibrate every heliostat of a field in one call, in parallel.

Heliostats that share a drive type, a parameter set and the fit options (at least
:data:`BATCH_MIN` of them) are fitted together by :func:`heliostat.calibration.batch.fit_batch`
(one vectorised solve per chunk, results equal to the single fit's within the optimisers'
tolerances); heliostats that choose their parameter set (the default of ``heliostat
calibrate``) are calibrated together by
:func:`heliostat.calibration.selection_batch.calibrate_batch` (the same sets as
:func:`~heliostat.calibration.selection.calibrate_heliostat`); the rest one at a time
(:func:`run_job`). Each chunk is independent, so the
chunks run on a :class:`concurrent.futures.ProcessPoolExecutor` (one machine) or on Dask
(``backend="dask"``, the ``[dist]`` extra; a cluster through a ``distributed.Client``,
else Dask's local process scheduler). ``"sequential"`` runs in this process. All
backends return the same results; where they cut a group into other chunks, to the
batch's stopping tolerance (a batch's floating-point reductions depend on its size at
1e-16, which moves the stop along weakly determined directions by < 1e-3 standard errors).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from heliostat.calibration.batch import fit_batch
from heliostat.calibration.crossval import with_cross_validation
from heliostat.calibration.fit import FitResult, fit_heliostat, resolve_names
from heliostat.calibration.observations import Observations
from heliostat.calibration.selection import CalibrationOptions, calibrate_heliostat
from heliostat.errors import CalibrationError
from heliostat.kinematics import HeliostatKinematics, KinematicErrors

BACKENDS = ("sequential", "process", "dask")
#: Smallest group of like heliostats fitted as a batch (below it the single fits are as
#: fast: the batch's fixed cost is ~50 vectorised steps).
BATCH_MIN = 8
#: Smallest chunk of a batched group sent to a worker (a Dask task costs ~1 ms of
#: scheduling; 256 batched fits take ~0.3 s).
CHUNK_MIN = 256


#: Without ``--params`` (or ``--no-select``), heliostats with at least this many records
#: get their parameter set chosen by nested cross-validation
#: (:func:`heliostat.calibration.selection.calibrate_heliostat`; fewer records leave
#: nothing to check a choice with).
MIN_RECORDS_TO_SELECT = 3


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


def _failed(job: Job, exc: Exception) -> FitResult:
    return FitResult(
        job.observations.heliostat_id,
        job.kinematics.drive,
        job.names,
        KinematicErrors.zeros(job.kinematics.drive),
        {},
        False,
        f"{type(exc).__name__}: {exc}",
        n_points=len(job.observations),
    )


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
        return _failed(job, exc)


def run_chunk(jobs: Sequence[Job]) -> list[FitResult]:
    """Fit a chunk of heliostats one at a time (a unit of work sent to a worker)."""
    return [run_job(j) for j in jobs]


def run_batch(jobs: Sequence[Job]) -> list[FitResult]:
    """Fit a chunk of like jobs (:func:`batch_key`) together (a unit of work).

    The hat-matrix leave-one-out comes from the batch; refit leave-one-out and k-fold
    from :func:`~heliostat.calibration.crossval_batch.cross_validate_batch` (the refits
    batched). Jobs that choose their parameter set
    (:attr:`Job.select`) go through
    :func:`~heliostat.calibration.selection_batch.calibrate_batch`. A failure of the batch
    as a whole falls back to :func:`run_chunk`, which isolates the heliostat at fault.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    j0 = jobs[0]
    if j0.select:
        from heliostat.calibration.selection_batch import calibrate_batch

        try:
            opt = CalibrationOptions(None, j0.residual, j0.loo, j0.kfold)
            cals = calibrate_batch(
                [j.kinematics for j in jobs], [j.observations for j in jobs], opt
            )
        except (CalibrationError, ValueError, ArithmeticError):
            return run_chunk(jobs)
        return [c.fit for c in cals]
    try:
        results = fit_batch(
            [j.kinematics for j in jobs],
            [j.observations for j in jobs],
            j0.names,
            j0.residual,
            loo="hat" if j0.loo == "hat" else "none",
        )
    except (CalibrationError, ValueError, ArithmeticError):
        return run_chunk(jobs)
    if j0.loo == "refit" or j0.kfold:
        from heliostat.calibration.crossval_batch import cross_validate_batch

        try:
            results = cross_validate_batch(
                [j.kinematics for j in jobs], [j.observations for j in jobs], results,
                j0.loo, j0.kfold, j0.residual,
            )  # fmt: skip
        except (CalibrationError, ValueError, ArithmeticError):
            results = [_cross_validate(j, r) for j, r in zip(jobs, results, strict=True)]
    return results


def _cross_validate(job: Job, r: FitResult) -> FitResult:
    """One heliostat's refit cross-validation (the batch's failure isolated)."""
    if not r.success:
        return r
    try:
        loo = "refit" if job.loo == "refit" else "none"
        cv = with_cross_validation(
            job.kinematics, job.observations, r, loo, job.kfold, job.residual
        )
        return cv if loo == "refit" else dataclasses.replace(cv, loo_rms_mrad=r.loo_rms_mrad)
    except (CalibrationError, ValueError, ArithmeticError) as exc:
        return _failed(job, exc)


def batch_key(job: Job) -> tuple:
    """Jobs with equal keys can share a batch: drive, parameters and fit options."""
    return (job.kinematics.drive, job.names, job.residual, job.loo, job.kfold, job.select)


def run_unit(unit: tuple[bool, list[Job]]) -> list[FitResult]:
    """A unit of work from :func:`plan_units`: ``(batched, jobs)``."""
    batched, jobs = unit
    return run_batch(jobs) if batched else run_chunk(jobs)


def plan_units(
    jobs: Sequence[Job], n_chunks: int, batch_min: int = BATCH_MIN
) -> list[tuple[bool, list[Job]]]:
    """Split jobs into units of work: like jobs (:func:`batch_key`) in groups of at least
    ``batch_min`` become batched chunks (about ``n_chunks`` over the field, none smaller
    than :data:`CHUNK_MIN` unless the group is), the rest single-fit chunks."""
    groups: dict[tuple, list[Job]] = {}
    for j in jobs:
        groups.setdefault(batch_key(j), []).append(j)
    units: list[tuple[bool, list[Job]]] = []
    singles: list[Job] = []
    total = max(len(jobs), 1)
    for group in groups.values():
        if batch_min <= 0 or len(group) < batch_min:
            singles.extend(group)
            continue
        share = max(1, round(n_chunks * len(group) / total))
        size = max(min(CHUNK_MIN, len(group)), -(-len(group) // share))
        units.extend((True, group[i : i + size]) for i in range(0, len(group), size))
    units.extend((False, c) for c in _chunks(singles, n_chunks) if c)
    return units


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
    batch_min: int = BATCH_MIN,
    progress: Callable[[int, int], None] | None = None,
    executor: ProcessPoolExecutor | None = None,
) -> dict[str, FitResult]:
    """Fit every job; results keyed by heliostat id, in job order.

    Parameters
    ----------
    jobs : sequence of Job
        From :func:`make_jobs`.
    backend : {"process", "dask", "sequential"}
    max_workers : int, optional
        Worker processes (default: ``os.cpu_count()``; with a Dask ``client``, the
        cluster's worker count).
    chunks_per_worker : int
        Chunks per worker (a few, so a slow chunk does not leave workers idle).
    client : distributed.Client, optional
        Dask cluster to run on (``backend="dask"`` only).
    batch_min : int
        Smallest group of like jobs fitted as a batch (0: every job alone, the
        per-heliostat path).
    progress : callable, optional
        ``progress(done, total)`` in heliostats, called as chunks finish.
    executor : ProcessPoolExecutor, optional
        A pool to reuse (``backend="process"``; :func:`calibrate_stream` keeps one for
        all its chunks).

    Raises
    ------
    ImportError
        For ``backend="dask"`` without Dask installed (install the ``[dist]`` extra).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    jobs = list(jobs)
    if client is not None and max_workers is None:
        max_workers = max(1, len(client.scheduler_info().get("workers", {})))
    workers = max_workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
    n_chunks = 1 if backend == "sequential" else workers * chunks_per_worker
    units = plan_units(jobs, n_chunks, batch_min)
    total, done = len(jobs), 0
    parts: list[list[FitResult]] = []

    def tick(part: list[FitResult]) -> None:
        nonlocal done
        done += len(part)
        if progress is not None:
            progress(done, total)

    if backend == "sequential" or not jobs:
        for u in units:
            parts.append(run_unit(u))
            tick(parts[-1])
    elif backend == "process" and executor is not None:
        for part in executor.map(run_unit, units):
            parts.append(part)
            tick(part)
    elif backend == "process":
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for part in pool.map(run_unit, units):
                parts.append(part)
                tick(part)
    else:
        parts = _run_dask(units, workers, client, tick)
    by_id = {r.heliostat_id: r for part in parts for r in part}
    return {j.observations.heliostat_id: by_id[j.observations.heliostat_id] for j in jobs}


def _run_dask(units, workers: int, client, tick) -> list[list[FitResult]]:
    try:
        import dask
    except ImportError:
        raise ImportError(
            "backend 'dask' needs Dask: pip install 'heliostat-calibration[dist]'"
        ) from None
    if client is not None:
        from distributed import as_completed

        futures = client.map(run_unit, units, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        parts: list = [None] * len(units)
        for fut in as_completed(futures):
            parts[index[fut.key]] = fut.result()
            tick(parts[index[fut.key]])
        return parts
    tasks = [dask.delayed(run_unit)(u) for u in units]
    parts = list(dask.compute(*tasks, scheduler="processes", num_workers=workers))
    for p in parts:
        tick(p)
    return parts


def calibrate_stream(
    chunks: Iterable[Sequence[Job]],
    write: Callable[[dict[str, FitResult]], None],
    backend: str = "process",
    max_workers: int | None = None,
    client=None,
    chunks_per_worker: int = 4,
) -> int:
    """Calibrate a field that does not fit in memory, one chunk of jobs at a time.

    Each chunk (from a generator reading the history database, a file, …) is fitted as
    :func:`calibrate_field` would and handed to ``write`` (in chunk order) before the
    chunk after next is read. With ``backend="process"`` one pool serves every chunk and
    the next chunk is read while the workers fit the current one, so memory holds two
    chunks' observations and results.

    Returns
    -------
    int
        Heliostats fitted (successful or not).
    """
    workers = max_workers or os.cpu_count() or 1
    n = 0
    if backend != "process" or workers < 2:
        for chunk in chunks:
            res = calibrate_field(list(chunk), backend, workers, chunks_per_worker, client)
            write(res)
            n += len(res)
        return n

    def finish(jobs: list[Job], futures) -> int:
        by_id = {r.heliostat_id: r for f in futures for r in f.result()}
        write({j.observations.heliostat_id: by_id[j.observations.heliostat_id] for j in jobs})
        return len(jobs)

    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending = None
        for chunk in chunks:
            jobs = list(chunk)
            futures = [
                pool.submit(run_unit, u) for u in plan_units(jobs, workers * chunks_per_worker)
            ]
            if pending is not None:
                n += finish(*pending)
            pending = (jobs, futures)
        if pending is not None:
            n += finish(*pending)
    return n


def too_few_records(job, explicit: bool):
    """A failed :class:`FitResult` saying what ``job``'s records can and cannot determine
    when they are too few for its parameters (None when they suffice).

    n records give 2n residual components. A fit of p parameters needs 2n ≥ p + 1; a
    leave-one-out check of it needs 2(n − 1) ≥ p + 1. The nominal model's pointing error
    on the records (``rms_before_mrad``) is reported either way: it needs no fit.
    """
    import math

    import numpy as np

    from heliostat.calibration.fit import FitResult, pointing_residuals
    from heliostat.kinematics import KinematicErrors

    n, p = len(job.observations), len(job.names)
    need_fit = 2 * n >= p + 1
    need_loo = job.loo == "none" or 2 * (n - 1) >= p + 1
    if need_fit and need_loo:
        return None
    zeros = KinematicErrors.zeros(job.kinematics.drive)
    before = pointing_residuals(job.kinematics, job.observations, zeros, job.residual)
    rms = float(np.sqrt(np.mean(before**2)))
    max_fit, max_loo = 2 * n - 1, max(2 * (n - 1) - 1, 0)
    n_needed = math.ceil((p + 1) / 2) + 1
    which = "the chosen" if explicit else f"the default {job.kinematics.drive}-drive"
    reason = (
        f"{n} record(s) give {2 * n} residuals: too few for {which} set of {p} parameters "
        f"({', '.join(job.names)}); a fit with a leave-one-out check needs at least "
        f"{n_needed} records. These records can fit at most {max_fit} parameter(s), and "
        f"check at most {max_loo} by leave-one-out (--params with fewer, e.g. "
        f"--params axis2_zero_rad; --loo none skips the check). Without a fit: the "
        f"nominal model misses by {', '.join(f'{v:.2f}' for v in before)} mrad "
        f"(RMS {rms:.2f} mrad)."
    )
    if not explicit and n < MIN_RECORDS_TO_SELECT:
        reason += (
            f" Choosing the set by cross-validation needs at least {MIN_RECORDS_TO_SELECT} "
            "records (one held out, and still a check of the choice)."
        )
    return FitResult(
        job.observations.heliostat_id,
        job.kinematics.drive,
        job.names,
        zeros,
        {},
        False,
        reason,
        n_points=n,
        rms_before_mrad=rms,
    )


def too_few_to_choose(job: Job) -> FitResult | None:
    """The failed fit of :func:`too_few_records` for a job that would choose its set
    (``job.select``) from fewer than :data:`MIN_RECORDS_TO_SELECT` records, else None
    (``heliostat calibrate``'s rule; the demo's too)."""
    if job.select and len(job.observations) < MIN_RECORDS_TO_SELECT:
        return too_few_records(job, explicit=False)
    return None
