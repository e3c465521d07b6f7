"""End-to-end ledger: metered stand-in calibration fits, an ML training figure, a gain.

Meters a classical stand-in fit per heliostat (scipy least_squares, 8 parameters, 300
observations: the size of a kinematic calibration), adds an ML training entry from
Strubell et al.'s Eq. (1) for a hypothetical 1-GPU, 2-hour training (250 W, PUE 1.58)
amortised over 100,000 inferences, meters 400 stand-in inferences, records the
Heliogen-like 3 → 0.5 mrad gain, and prints the summary under each grid preset as JSON.

    .venv/bin/python bench/ledger_demo.py [--db FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from heliostat.ledger.book import GainRecord, LedgerBook, LedgerEntry
from heliostat.ledger.carbon import STRUBELL_PUE, strubell_kwh
from heliostat.ledger.energy import EnergyMeter
from heliostat.ledger.gain import heliogen_like, pointing_gain


def stand_in_fit(rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(0, 2 * np.pi, 300)
    p_true = rng.normal(0, 1e-3, 8)

    def model(p):
        return (
            p[0]
            + p[1] * np.cos(t)
            + p[2] * np.sin(t)
            + p[3] * np.cos(2 * t)
            + p[4] * np.sin(2 * t)
            + p[5] * np.tan(0.3 * t)
            + p[6] * t
            + p[7] * t**2
        )

    y = model(p_true) + rng.normal(0, 1e-4, t.size)
    return least_squares(lambda p: model(p) - y, np.zeros(8)).x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", help="history file (default: a temporary one)")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or str(Path(tmp) / "history.sqlite")
        book = LedgerBook(db)
        meter = EnergyMeter()
        for hid in ("H001", "H002", "H003", "H004", "H005"):
            with meter:
                stand_in_fit(rng)
            book.add(
                LedgerEntry.from_measurement(
                    meter.measurement, "calibration", "classical", heliostat_id=hid
                )
            )
        train = strubell_kwh(2.0, 250.0, pue=1.0)  # IT energy; the PUE goes in the entry
        book.add(
            LedgerEntry(
                stage="ml_training",
                method="ml",
                energy_j=train.joules,
                pue=STRUBELL_PUE,
                source="strubell-eq1 (1 GPU x 250 W x 2 h, PUE 1.58)",
                model_id="spotnet-v1",
                expected_inferences=100_000,
            )
        )
        with meter:
            for _ in range(400):
                np.tanh(rng.normal(size=(64, 64)) @ rng.normal(size=(64, 16)))
        book.add(
            LedgerEntry.from_measurement(
                meter.measurement, "ml_inference", "ml", model_id="spotnet-v1", n_inferences=400
            )
        )
        book.add_gain(GainRecord.from_result(pointing_gain(heliogen_like(), 3.0, 0.5)))
        out = {"db": db, "summaries": [s.as_dict() for s in book.summaries()]}
        book.close()
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
