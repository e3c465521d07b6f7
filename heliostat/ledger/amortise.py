"""The founding question: does a trained model repay its training in better plant heat?

:func:`amortise` sets the CO2e of a training run (grid electricity) against the CO2 the
heat gained by better pointing displaces (gas boiler), two ways:

* **calibration as a whole** — the gain from the uncalibrated error to the calibrated one;
* **ML's increment over classical calibration** — the gain from classical's error to ML's,
  the only part ML can claim.

For each: payback in plant operating hours of one field, and how many **heliostat-years**
(one heliostat served for one clear-sky year) or **field-years** the model must serve to
repay its training. Heliostat-years = training kg / (displaced kg per clear-sky year / N);
field-years = heliostat-years / N.

Training presets are Strubell et al. 2019's Table 3 runs, through their Eq. (1)
(:func:`~heliostat.ledger.carbon.strubell_kwh`, PUE 1.58), and our own model card.

References
----------
.. [1] E. Strubell, A. Ganesh and A. McCallum, "Energy and Policy Considerations for Deep
   Learning in NLP," Proc. ACL 2019, pp. 3645-3650. doi:10.18653/v1/P19-1355
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from heliostat.ledger.carbon import GRID_PRESETS, CarbonIntensity, Energy, strubell_kwh


@dataclass(frozen=True, slots=True)
class TrainingRun:
    """A training run's facility energy.

    Attributes
    ----------
    name : str
    energy : Energy
        Facility energy (PUE included).
    source : str
    rel_uncertainty : float
        Relative standard uncertainty of the energy (NaN: not stated). [-]
    """

    name: str
    energy: Energy
    source: str
    rel_uncertainty: float = math.nan


def _strubell(name: str, power_w: float, hours: float) -> TrainingRun:
    return TrainingRun(
        name,
        strubell_kwh(hours, power_w),
        f"Strubell et al. 2019 Table 3: {power_w:g} W × {hours:g} h × PUE 1.58 (their Eq. 1)",
    )


def model_card_run(name: str = "spot_cnn") -> TrainingRun:
    """Our own model's training (+ rendering its data), from its model card."""
    from heliostat.ml.registry import load_card

    card = load_card(name)
    tr, gen = card["training"], card["training_data"]["generation"]
    j = float(tr["energy_j"]) * float(tr.get("pue", 1.0)) + float(gen["energy_j"]) * float(
        gen.get("pue", 1.0)
    )
    rel = max(float(tr.get("rel_uncertainty", math.nan)), float(gen.get("rel_uncertainty", 0)))
    return TrainingRun(
        "model-card",
        Energy(j),
        f"heliostat/ml/models/{name}.card.json: training + data generation, metered "
        f"({tr.get('source', '?')})",
        rel,
    )


#: Training presets (Strubell et al.'s "Power (W)" column is already CPU + DRAM + GPUs).
TRAINING_PRESETS = {
    "transformer-base": lambda: _strubell("transformer-base", 1415.78, 12.0),
    "bert-base": lambda: _strubell("bert-base", 12041.51, 79.2),
    "nas": lambda: _strubell("nas", 1515.43, 274_120.0),
    "model-card": model_card_run,
}


def training_run(name: str) -> TrainingRun:
    """A preset by name (:data:`TRAINING_PRESETS`)."""
    if name not in TRAINING_PRESETS:
        raise ValueError(
            f"unknown training preset {name!r}: expected one of {', '.join(TRAINING_PRESETS)}"
        )
    return TRAINING_PRESETS[name]()


@dataclass(frozen=True, slots=True)
class Repayment:
    """One training run against one gain under one grid.

    Attributes
    ----------
    scope : str
        "calibration as a whole" or "ML over classical".
    grid : str
    training_kg_co2e : float [kg]
    displaced_kg_per_year : float
        CO2 the gain displaces in a clear-sky year, whole field. [kg]
    n_heliostats : int
    payback_hours : float
        Plant operating hours of one field until repaid (inf: never). [h]
    heliostat_years : float
        Heliostat-years of service to repay (inf: never). [heliostat·year]
    field_years : float
        ``heliostat_years / n_heliostats``: years of one whole field, or fields served
        for one year. [field·year]
    """

    scope: str
    grid: str
    training_kg_co2e: float
    displaced_kg_per_year: float
    n_heliostats: int
    payback_hours: float
    heliostat_years: float
    field_years: float


def repayment(
    scope: str,
    training_kg: float,
    displaced_kg_per_year: float,
    n_heliostats: int,
    operating_hours_per_year: float,
    grid: str = "",
) -> Repayment:
    """The arithmetic of :class:`Repayment` (pure; see the module docstring)."""
    if displaced_kg_per_year <= 0 or operating_hours_per_year <= 0:
        return Repayment(scope, grid, training_kg, displaced_kg_per_year, n_heliostats,
                         math.inf, math.inf, math.inf)  # fmt: skip
    per_h = displaced_kg_per_year / operating_hours_per_year
    hy = training_kg / (displaced_kg_per_year / n_heliostats)
    return Repayment(scope, grid, training_kg, displaced_kg_per_year, n_heliostats,
                     training_kg / per_h, hy, hy / n_heliostats)  # fmt: skip


def amortise(
    run: TrainingRun,
    grids: list[CarbonIntensity],
    whole,
    increment,
) -> list[Repayment]:
    """Repayments of a training run under each grid, for the whole gain and ML's increment.

    Parameters
    ----------
    run : TrainingRun
    grids : list of CarbonIntensity
    whole, increment : GainResult
        The gain of calibration (uncalibrated → classical) and of ML over classical
        (classical → ML), same operating point.
    """
    out = []
    for g in grids:
        kg = g.emissions(run.energy).kg_co2e
        for scope, gain in (("calibration as a whole", whole), ("ML over classical", increment)):
            out.append(
                repayment(
                    scope,
                    kg,
                    gain.co2_avoided_kg_per_year,
                    gain.n_heliostats,
                    gain.operating_hours_per_year,
                    g.name,
                )  # fmt: skip
            )
    return out


def as_dicts(rows: list[Repayment]) -> list[dict]:
    """JSON-ready rows (inf as None)."""
    return [
        {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(r).items()}
        for r in rows
    ]


# ------------------------------------------------------------------- seeds
def seeds(before_mrad: float = 3.0, after_mrad: float = 0.5, step_s: float = 1800.0) -> dict:
    """The founding comparison: Strubell et al.'s NAS run under three grids against the CO2
    a Heliogen-like field and a 10,000-heliostat plant displace in a clear-sky year.

    Both fields are hypothetical reference points (:mod:`heliostat.ledger.gain`). For each
    the table gives the CO2 displaced by all the heat of the field (at ``after_mrad``)
    and by the calibration gain alone (``before_mrad`` → ``after_mrad``).
    """
    from heliostat.ledger.gain import heliogen_like, plant_like, pointing_gain

    nas = training_run("nas")
    runs = [
        {
            "grid": g.name,
            "lb_co2e_per_kwh": g.lb_per_kwh,
            "kwh": nas.energy.kwh,
            "t_co2e": g.emissions(nas.energy).tonnes,
        }
        for g in GRID_PRESETS.values()
    ]
    big = plant_like()
    big = replace(big, name="10,000-heliostat plant", n_heliostats=10_000)
    fields = []
    for pt in (heliogen_like(), big):
        g = pointing_gain(pt, before_mrad, after_mrad, step_s=step_s)
        total_t = g.thermal_after_kwh_per_year / g.boiler_efficiency * g.gas_kg_per_kwh / 1e3
        fields.append(
            {
                "field": pt.label,
                "n_heliostats": pt.n_heliostats,
                "heat_kwh_per_year": g.thermal_after_kwh_per_year,
                "displaced_t_per_year_all_heat": total_t,
                "displaced_t_per_year_calibration_gain": g.co2_avoided_kg_per_year / 1e3,
            }
        )
    return {
        "training": {"name": nas.name, "source": nas.source, "kwh": nas.energy.kwh},
        "runs": runs,
        "fields": fields,
        "before_mrad": before_mrad,
        "after_mrad": after_mrad,
        "annual_basis": "clear-sky year",
    }
