"""Run paint-csp's own ``DatasetSplitter`` on a metadata CSV; print the splits as JSON.

Used by tests/test_paint_splits.py in a separate interpreter (paint-csp cannot share our
venv). Either ``paint`` is installed there (``import paint.data.dataset_splits``), or
``--wheel`` names paint-csp's wheel and the two modules the splitter needs
(``paint/util/paint_mappings.py``, ``paint/data/dataset_splits.py``) are loaded from it
unchanged, without running the package ``__init__`` files (which import the STAC client,
pyproj, torch …); then the interpreter needs only pandas and scikit-learn.

    python run_paint_splits.py METADATA.csv SPLIT TRAIN VAL [--wheel WHEEL]

Prints ``{"split": {record id: label}, "dropped": [...]}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import tempfile
import types
import zipfile
from pathlib import Path


def _load_from_wheel(wheel: Path):
    tmp = Path(tempfile.mkdtemp())
    with zipfile.ZipFile(wheel) as z:
        for name in ("paint/util/paint_mappings.py", "paint/data/dataset_splits.py"):
            z.extract(name, tmp)
    for pkg in ("paint", "paint.util", "paint.data"):
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(tmp / pkg.replace(".", "/"))]
        sys.modules[pkg] = mod
    for name in ("paint.util.paint_mappings", "paint.data.dataset_splits"):
        spec = importlib.util.spec_from_file_location(name, tmp / (name.replace(".", "/") + ".py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules["paint.data.dataset_splits"].DatasetSplitter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("metadata")
    ap.add_argument("split")
    ap.add_argument("train", type=int)
    ap.add_argument("val", type=int)
    ap.add_argument("--wheel", type=Path)
    a = ap.parse_args()
    logging.disable(logging.CRITICAL)
    if a.wheel:
        splitter_cls = _load_from_wheel(a.wheel)
    else:
        from paint.data.dataset_splits import DatasetSplitter as splitter_cls
    with tempfile.TemporaryDirectory() as out:
        s = splitter_cls(input_file=a.metadata, output_dir=out, remove_unused_data=True)
        all_ids = set(s.metadata["HeliostatId"])
        df = s.get_dataset_splits(a.split, training_size=a.train, validation_size=a.val)
    kept = set(df["HeliostatId"])
    print(
        json.dumps(
            {
                "split": {str(k): v for k, v in df["Split"].items()},
                "order": [str(k) for k in df.index],
                "dropped": sorted(all_ids - kept),
            }
        )
    )


if __name__ == "__main__":
    main()
