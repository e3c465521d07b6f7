"""Calibration: fit each heliostat's kinematic error model and compute its corrections.

- :mod:`~heliostat.calibration.observations`: the ``observations.csv`` reader.
- :mod:`~heliostat.calibration.paint`: the PAINT (DLR/Jülich) archive reader;
  :mod:`~heliostat.calibration.paint_layout` finds its files (one heliostat or many).
- :mod:`~heliostat.calibration.selection`: the parameter set chosen by nested
  cross-validation; :func:`calibrate_heliostat`, the one entry the CLI, the campaign
  runner and the demo call.
- :mod:`~heliostat.calibration.fit`: robust least-squares fit, standard errors,
  identifiability check.
- :mod:`~heliostat.calibration.crossval`: leave-one-out and k-fold pointing error.
- :mod:`~heliostat.calibration.corrections`: corrected setpoints, the corrections file.
- :mod:`~heliostat.calibration.batch`: many like heliostats fitted together (vectorised).
- :mod:`~heliostat.calibration.selection_batch`: many heliostats' parameter sets chosen
  together (:func:`calibrate_batch`, the batched :func:`calibrate_heliostat`).
- :mod:`~heliostat.calibration.field`: a whole field in parallel (processes or Dask),
  batched by drive and parameter set; streamed in chunks.
"""

from heliostat.calibration.batch import fit_batch
from heliostat.calibration.corrections import (
    Setpoints,
    corrected_setpoints,
    corrections_document,
    heliostat_entry,
    read_corrections,
    write_corrections,
)
from heliostat.calibration.crossval import kfold_rms, loo_hat, loo_rms, with_cross_validation
from heliostat.calibration.field import Job, calibrate_field, calibrate_stream, make_jobs
from heliostat.calibration.fit import FitResult, fit_heliostat, pointing_residuals, resolve_names
from heliostat.calibration.observations import (
    Observations,
    Rejection,
    observations_from_frame,
    read_observations,
)
from heliostat.calibration.paint import PaintArchive, PaintCampaign, load_paint_dir, load_paint_root
from heliostat.calibration.selection import (
    Calibration,
    CalibrationOptions,
    Selection,
    calibrate_heliostat,
    candidate_sets,
    select_parameters,
)
from heliostat.calibration.selection_batch import calibrate_batch

__all__ = [
    "Calibration",
    "CalibrationOptions",
    "FitResult",
    "Job",
    "Observations",
    "PaintArchive",
    "PaintCampaign",
    "Rejection",
    "Selection",
    "Setpoints",
    "calibrate_batch",
    "calibrate_field",
    "calibrate_heliostat",
    "calibrate_stream",
    "candidate_sets",
    "corrected_setpoints",
    "corrections_document",
    "fit_batch",
    "fit_heliostat",
    "heliostat_entry",
    "kfold_rms",
    "loo_hat",
    "loo_rms",
    "load_paint_dir",
    "load_paint_root",
    "make_jobs",
    "observations_from_frame",
    "pointing_residuals",
    "read_corrections",
    "read_observations",
    "resolve_names",
    "select_parameters",
    "with_cross_validation",
    "write_corrections",
]
