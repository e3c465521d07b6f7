"""The corrections file (``heliostat-corrections/1``): its one reader and one writer.

``heliostat calibrate`` writes it (:mod:`heliostat.calibration.corrections` builds the
document, :func:`write_corrections` writes it) and ``heliostat bridge apply`` reads it
with :func:`read_corrections` — the same function, so the file a test writes and reads
is the file the bridge accepts. The format is documented in ``docs/corrections.md``.

This module is deliberately small (standard library only): the firmware bridge imports
it, and importing :mod:`heliostat.calibration` would pull in the fitting stack (SciPy)
for a JSON reader. Values (limits, the maximum correction, parameter names) are checked
by :func:`firmware_bridge.safety.plan_corrections`; this reader checks the shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from heliostat.errors import InputError

FORMAT = "heliostat-corrections/1"
#: Step keys every setpoint carries (integers, 32-bit). [steps]
STEP_KEYS = ("axis1_steps", "axis2_steps", "nominal_axis1_steps", "nominal_axis2_steps")
_I32 = (-(2**31), 2**31 - 1)


def _short(v: Any) -> str:
    """repr of a value for a message, cut short."""
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: a JSON object with a key twice is refused (json keeps the
    last one silently, so a hand edit could hide a value)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _is_step(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and _I32[0] <= v <= _I32[1]


def record_shape_problem(rec: Mapping[str, Any]) -> str | None:
    """What is wrong with the shape of one heliostat record (key named, expected vs
    received), or None. Values are checked by ``firmware_bridge.safety.plan_corrections``."""
    drive = rec.get("drive")
    if drive is not None and not isinstance(drive, str):
        return f"key 'drive': expected a drive name, got {_short(drive)}"
    params = rec.get("parameters")
    if params is not None and not isinstance(params, Mapping):
        return f"key 'parameters': expected an object, got {type(params).__name__}"
    sps = rec.get("setpoints")
    if sps is None:
        return None
    if not isinstance(sps, list):
        return f"key 'setpoints': expected a list of objects, got {type(sps).__name__}"
    for k, sp in enumerate(sps):
        if not isinstance(sp, Mapping):
            return f"setpoints[{k}]: expected an object, got {type(sp).__name__}"
        tgt = sp.get("target")
        if tgt is not None and not isinstance(tgt, str):
            return f"setpoints[{k}]: key 'target': expected a target id, got {_short(tgt)}"
    return None


def _step_problem(rec: Mapping[str, Any]) -> str | None:
    for k, sp in enumerate(rec.get("setpoints") or []):
        for key in STEP_KEYS:
            if key not in sp:
                return f"setpoints[{k}] key {key!r}: missing"
            if not _is_step(sp[key]):
                return (
                    f"setpoints[{k}] key {key!r}: expected a 32-bit integer step count, "
                    f"got {_short(sp[key])}"
                )
    return None


def read_corrections(path: str | Path) -> dict[str, Any]:
    """Read and check a corrections file: the one reader (calibration, tests, bridge).

    Checked: valid JSON with no key twice in an object and no NaN/Infinity; ``format``
    is :data:`FORMAT`; ``heliostats`` is a list of objects, each with a string
    ``heliostat`` id that no other record has; ``drive`` a string, ``parameters`` an
    object, ``setpoints`` a list of objects whose step keys (:data:`STEP_KEYS`) are
    32-bit integers and whose ``target`` is a string.

    Raises
    ------
    InputError
        Naming the file and the key (``heliostats[2] (H003): setpoints[0] key ...``).
    OSError
        When the file cannot be read.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OSError(f"{p}: corrections file not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not a UTF-8 text file: {exc}") from None
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateKey as exc:
        raise InputError(f"{p}: key {exc.args[0]!r} appears twice in one object") from None
    except ValueError as exc:
        raise InputError(f"{p}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(f"{p}: key 'format': expected {FORMAT!r}, got {got!r}")
    hs = doc.get("heliostats")
    if not isinstance(hs, list):
        raise InputError(f"{p}: key 'heliostats': expected a list, got {_short(hs)}")
    seen: dict[str, int] = {}
    for i, h in enumerate(hs):
        if not isinstance(h, dict) or not isinstance(h.get("heliostat"), str):
            raise InputError(f"{p}: heliostats[{i}]: expected an object with a 'heliostat' id")
        hid = h["heliostat"]
        if hid in seen:
            raise InputError(
                f"{p}: heliostats[{i}]: heliostat {hid!r} appears twice "
                f"(also heliostats[{seen[hid]}]); refusing to choose one"
            )
        seen[hid] = i
        problem = record_shape_problem(h) or _step_problem(h)
        if problem:
            raise InputError(f"{p}: heliostats[{i}] ({hid}): {problem}")
    return doc


def write_corrections(path: str | Path, document: Mapping[str, Any]) -> None:
    """Write a corrections document as JSON: the one writer (atomic: a temporary file
    in the same folder, then rename; NaN/Infinity refused)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(p)


class CorrectionsStream:
    """Write a corrections document entry by entry (a field too large to hold): the
    same JSON as :func:`write_corrections`, atomic in the same way (the file appears at
    ``close`` without error; a failure leaves no file).

    Parameters
    ----------
    path : str or Path
    head : mapping
        The document without its ``heliostats`` list (format, created_utc, field).
    """

    def __init__(self, path: str | Path, head: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._f = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed in close)
        body = json.dumps({k: v for k, v in head.items() if k != "heliostats"}, indent=2)
        self._f.write(body[:-2] + ',\n  "heliostats": [')
        self.count = 0

    def add(self, entry: Mapping[str, Any]) -> None:
        """Append one heliostat's entry (NaN/Infinity refused)."""
        text = json.dumps(entry, indent=2, allow_nan=False).replace("\n", "\n    ")
        self._f.write(("," if self.count else "") + "\n    " + text)
        self.count += 1

    def close(self, ok: bool = True) -> None:
        """Finish the file (``ok``), or drop it."""
        if self._f.closed:
            return
        if ok:
            self._f.write("\n  ]\n}\n" if self.count else "]\n}\n")
        self._f.close()
        if ok:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> CorrectionsStream:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self.close(exc_type is None)
