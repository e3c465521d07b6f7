"""Choose the empty-target images shipped in ``sim/data/targets/`` (run once; kept so the
choice can be checked and redone).

Not hand-picked: the 999 UTIS empty-target images are sorted by their median grey level
(exposure) and split into 32 equal-count strata; one image is drawn from each stratum with
a seeded generator. The set therefore spans the real exposure range with its shadows,
gradients and seams as they come.

    python bench/select_target_images.py ../shared/real/utis/emptyTargetImages sim/data/targets
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

N_IMAGES = 32
SEED = 20240909  # the UTIS release date


def main(src: str, dst: str) -> None:
    files = sorted(Path(src).glob("*.png"))
    if not files:
        raise SystemExit(f"{src}: no PNG files")
    level = np.array([np.median(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)) for f in files])
    order = np.argsort(level, kind="stable")
    rng = np.random.default_rng(SEED)
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    for stratum in np.array_split(order, N_IMAGES):
        f = files[int(rng.choice(stratum))]
        shutil.copyfile(f, out / f.name)
        print(f.name, int(level[files.index(f)]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
