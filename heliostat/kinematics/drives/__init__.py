"""The drive types: one module per type, and the registry everything reads.

Every public module of this package (``azel.py``, ``linear.py``, …; names not starting
with ``_``) defines ``DRIVE``, a :class:`Drive`: the constants of the one kinematic chain,
its two axis kinds with their ``field.toml`` keys, its error-parameter groups with their
fit bounds, its controller register code and a typical nominal geometry. The config
loader, the register map, the error model, the calibration fit, the PAINT reader and the
simulator look a drive up here by name (``drive(name)``) instead of comparing strings,
so a new drive type is one new module (see ``docs/kinematics.md``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType

from heliostat.kinematics.drives._base import (
    Axis,
    AxisKind,
    Chain,
    ConfigTable,
    Drive,
    ParamGroup,
    Typical,
)


def _check_new(d: Drive, known: Mapping[str, Drive]) -> None:
    if d.name in known:
        raise ValueError(f"drive type {d.name!r} is already registered")
    for other in known.values():
        if other.register_code == d.register_code:
            raise ValueError(
                f"drive type {d.name!r}: register code {d.register_code} is already "
                f"used by {other.name!r}"
            )


def _discover() -> dict[str, Drive]:
    found: list[Drive] = []
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        d = getattr(module, "DRIVE", None)
        if not isinstance(d, Drive):
            raise ImportError(f"{module.__name__} must define DRIVE, a Drive")
        found.append(d)
    out: dict[str, Drive] = {}
    for d in sorted(found, key=lambda d: d.register_code):
        _check_new(d, out)
        out[d.name] = d
    return out


_REGISTRY = _discover()

#: Every known drive type by name, in register-code order (read-only view).
DRIVES: Mapping[str, Drive] = MappingProxyType(_REGISTRY)


def drive(name: str) -> Drive:
    """The drive type called ``name``.

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown drive type {name!r}; known drive types: {', '.join(_REGISTRY)}"
        ) from None


def drive_names() -> tuple[str, ...]:
    """Names of the known drive types, in register-code order."""
    return tuple(_REGISTRY)


def drive_for_code(code: int) -> Drive | None:
    """The drive type whose controller register code is ``code`` (None if none is)."""
    return next((d for d in _REGISTRY.values() if d.register_code == code), None)


@contextmanager
def registered(d: Drive) -> Iterator[Drive]:
    """Register ``d`` for the duration of a ``with`` block (tests, experiments).

    A permanent drive type is a module in this package instead.

    Raises
    ------
    ValueError
        If its name or register code is taken.
    """
    _check_new(d, _REGISTRY)
    _REGISTRY[d.name] = d
    try:
        yield d
    finally:
        del _REGISTRY[d.name]


__all__ = [
    "DRIVES",
    "Axis",
    "AxisKind",
    "Chain",
    "ConfigTable",
    "Drive",
    "ParamGroup",
    "Typical",
    "drive",
    "drive_for_code",
    "drive_names",
    "registered",
]
