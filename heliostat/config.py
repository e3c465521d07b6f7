"""Reading and writing the configuration: ``field.toml`` (site, targets, drives,
heliostats, buses, safety; records in :mod:`heliostat.plant`) and ``camera.toml``
(intrinsics, distortion, pose; :mod:`heliostat.camera`), validated as they are read.

Every error names the file, the key and what was expected. Degrees appear only here at
the edge (``*_deg`` keys) and are converted to radians for the rest of the code.
See ``docs/config.md`` for the full schema with an example.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# The records live in their domain modules (heliostat.plant, heliostat.camera); they are
# re-exported here beside the readers and writers that build and write them.
from heliostat.camera import CameraConfig, look_at
from heliostat.frames import Site
from heliostat.kinematics import HeliostatKinematics, drive
from heliostat.paths import id_problem
from heliostat.plant import (
    MARK_KINDS,
    ArucoMarkers,
    Bus,
    FieldConfig,
    Heliostat,
    MarkLayout,
    Mirror,
    Safety,
    Target,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


__all__ = [
    "ArucoMarkers",
    "Bus",
    "CameraConfig",
    "ConfigError",
    "FieldConfig",
    "Heliostat",
    "Mirror",
    "Safety",
    "Target",
    "dumps_toml",
    "field_to_dict",
    "load_camera",
    "load_field",
    "look_at",
]


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid (message names file and key)."""


# --------------------------------------------------------------------------- reading
class _Table:
    """A TOML table with the file and key path, for error messages."""

    def __init__(self, data: Mapping[str, Any], path: str, where: str) -> None:
        self.data, self.path, self.where = data, path, where

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.path}: key '{self._key(key)}': {msg}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.err(key, "missing (required)")
            return default
        return self.data[key]

    def table(self, key: str, default: Any = ...) -> _Table:
        v = self.raw(key, {} if default is not ... else default)
        if not isinstance(v, Mapping):
            raise self.err(key, f"expected a table, got {type(v).__name__}")
        return _Table(v, self.path, self._key(key))

    def tables(self, key: str) -> list[_Table]:
        v = self.raw(key)
        if not isinstance(v, list) or not all(isinstance(x, Mapping) for x in v):
            raise self.err(key, "expected an array of tables ([[...]])")
        return [_Table(x, self.path, f"{self._key(key)}[{i}]") for i, x in enumerate(v)]

    def num(
        self,
        key: str,
        default: Any = ...,
        lo: float = -math.inf,
        hi: float = math.inf,
        lo_open: bool = False,
    ) -> float:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self.err(key, f"expected a finite number, got {v!r}")
        if v < lo or v > hi or (lo_open and v == lo):
            rng = f"{'(' if lo_open else '['}{lo}, {hi}]"
            raise self.err(key, f"expected a value in {rng}, got {v!r}")
        return float(v)

    def int_(
        self, key: str, default: Any = ..., lo: int | None = None, hi: int | None = None
    ) -> int:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(key, f"expected an integer, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.err(key, f"expected an integer in [{lo}, {hi}], got {v!r}")
        return int(v)

    def str_(self, key: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> str:
        v = self.raw(key, default)
        if not isinstance(v, str):
            raise self.err(key, f"expected a string, got {v!r}")
        if choices is not None and v not in choices:
            raise self.err(key, f"expected one of {', '.join(choices)}, got {v!r}")
        return v

    def bool_(self, key: str, default: Any = ...) -> bool:
        v = self.raw(key, default)
        if not isinstance(v, bool):
            raise self.err(key, f"expected true or false, got {v!r}")
        return v

    def vec(self, key: str, n: int = 3, default: Any = ...) -> tuple[float, ...]:
        v = self.raw(key, default)
        ok = (
            isinstance(v, list | tuple)
            and len(v) == n
            and all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                for x in v
            )
        )
        if not ok:
            raise self.err(key, f"expected {n} finite numbers, got {v!r}")
        return tuple(float(x) for x in v)

    def check_unknown(self, allowed: set[str]) -> None:
        extra = set(self.data) - allowed
        if extra:
            raise self.err(sorted(extra)[0], f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _load_toml(path: str | Path) -> _Table:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    return _Table(data, str(p), "")


# --------------------------------------------------------------------------- field.toml
_DRIVE_KEYS = {
    "type",
    "axis1",
    "axis2",
    "axis1_offset_enu_m",
    "axis2_offset_enu_m",
    "mirror_offset_enu_m",
}


def _drive_template(t: _Table) -> dict[str, Any]:
    t.check_unknown(_DRIVE_KEYS)
    kind = t.str_("type")
    try:
        spec = drive(kind)
    except ValueError as exc:
        raise t.err("type", str(exc)) from None
    return dict(
        drive=kind,
        axis1=spec.axes[0].read(t.table("axis1")),
        axis2=spec.axes[1].read(t.table("axis2")),
        axis1_offset_enu_m=t.vec("axis1_offset_enu_m", default=[0.0, 0.0, 0.0]),
        axis2_offset_enu_m=t.vec("axis2_offset_enu_m", default=[0.0, 0.0, 0.0]),
        mirror_offset_enu_m=t.vec("mirror_offset_enu_m", default=[0.0, 0.0, 0.0]),
    )


def _mirror(t: _Table, base: Mirror) -> Mirror:
    t.check_unknown({"width_m", "height_m", "reflectivity", "slope_error_mrad", "focal_length_m"})
    fl = t.raw("focal_length_m", base.focal_length_m)
    if fl is not None:
        fl = t.num("focal_length_m", lo=0, lo_open=True)
    return Mirror(
        width_m=t.num("width_m", base.width_m, lo=0, lo_open=True),
        height_m=t.num("height_m", base.height_m, lo=0, lo_open=True),
        reflectivity=t.num("reflectivity", base.reflectivity, lo=0, hi=1),
        slope_error_mrad=t.num("slope_error_mrad", base.slope_error_mrad, lo=0),
        focal_length_m=fl,
    )


def _corner_marks(t: _Table) -> MarkLayout:
    m = t.table("corner_marks")
    m.check_unknown({"kinds", "bar_width_m", "arm_length_m", "t_half_length_m"})
    base = MarkLayout()
    kinds = None
    if m.has("kinds"):
        kinds = m.raw("kinds")
        good = isinstance(kinds, list) and len(kinds) == 4
        if not (good and all(k in MARK_KINDS for k in kinds)):
            raise m.err("kinds", f'expected 4 of "L"/"T" (UL, UR, LR, LL), got {kinds!r}')
        kinds = tuple(kinds)
    try:
        return MarkLayout(
            kinds,
            m.num("bar_width_m", base.bar_width_m, lo=0, lo_open=True),
            m.num("arm_length_m", base.arm_length_m, lo=0, lo_open=True),
            m.num("t_half_length_m", base.t_half_length_m, lo=0, lo_open=True),
        )
    except ValueError as exc:
        raise m.err("arm_length_m", str(exc)) from None


def _target(t: _Table) -> Target:
    t.check_unknown(
        {"id", "centre_enu_m", "normal_enu", "width_m", "height_m", "markers", "corner_marks"}
    )
    corner_marks = _corner_marks(t) if t.has("corner_marks") else None
    markers = None
    if t.has("markers"):
        m = t.table("markers")
        m.check_unknown({"dictionary", "ids", "size_m", "inset_m"})
        ids = m.raw("ids")
        if not (isinstance(ids, list) and len(ids) == 4 and all(isinstance(i, int) for i in ids)):
            raise m.err("ids", f"expected 4 integer marker ids (UL, UR, LR, LL), got {ids!r}")
        markers = ArucoMarkers(
            m.str_("dictionary", "DICT_4X4_50"),
            tuple(ids),
            m.num("size_m", lo=0, lo_open=True),
            m.num("inset_m", 0.0, lo=0),
        )
    normal = t.vec("normal_enu")
    if np.linalg.norm(normal) == 0:
        raise t.err("normal_enu", "must be a non-zero vector")
    try:
        tgt = Target.make(
            t.str_("id"),
            t.vec("centre_enu_m"),
            normal,
            t.num("width_m", lo=0, lo_open=True),
            t.num("height_m", lo=0, lo_open=True),
            markers,
            corner_marks,
        )
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise t.err("normal_enu", str(exc)) from None
    if markers is not None and 2 * (markers.inset_m + markers.size_m) > min(
        tgt.width_m, tgt.height_m
    ):
        raise t.err("markers", "markers do not fit on the target")
    return tgt


def load_field(path: str | Path) -> FieldConfig:
    """Read and validate a ``field.toml``.

    Raises
    ------
    ConfigError
        Naming the file and the key for anything missing or invalid.
    """
    root = _load_toml(path)
    root.check_unknown({"site", "safety", "targets", "drives", "mirror", "buses", "heliostats"})
    s = root.table("site")
    s.check_unknown({"name", "latitude_deg", "longitude_deg", "altitude_m"})
    site = Site(
        s.num("latitude_deg", lo=-90, hi=90),
        s.num("longitude_deg", lo=-180, hi=360),
        s.num("altitude_m", lo=-500, hi=9000),
        s.str_("name", ""),
    )

    sf = root.table("safety", {})
    sf.check_unknown({"max_correction_mrad", "require_confirmation"})
    safety = Safety(
        sf.num("max_correction_mrad", 20.0, lo=0, lo_open=True),
        sf.bool_("require_confirmation", True),
    )

    targets: dict[str, Target] = {}
    for t in root.tables("targets"):
        tgt = _target(t)
        if tgt.id in targets:
            raise t.err("id", f"duplicate target id {tgt.id!r}")
        targets[tgt.id] = tgt

    drives_t = root.table("drives")
    drives = {name: _drive_template(drives_t.table(name)) for name in drives_t.data}
    if not drives:
        raise root.err("drives", "at least one drive template is required")

    base_mirror = _mirror(root.table("mirror", {}), Mirror())

    buses: dict[str, Bus] = {}
    bt = root.table("buses", {})
    for name in bt.data:
        b = bt.table(name)
        b.check_unknown({"port", "baudrate", "parity", "stopbits", "timeout_s"})
        buses[name] = Bus(
            name,
            b.str_("port"),
            b.int_("baudrate", 115200, lo=300, hi=4_000_000),
            b.str_("parity", "N", choices=("N", "E", "O")),
            b.int_("stopbits", 1, lo=1, hi=2),
            b.num("timeout_s", 0.2, lo=0, lo_open=True),
        )

    heliostats: dict[str, Heliostat] = {}
    seen_addr: dict[tuple[str, int], str] = {}
    for h in root.tables("heliostats"):
        h.check_unknown({"id", "position_enu_m", "drive", "bus", "address", "mirror"})
        hid = h.str_("id")
        problem = id_problem(hid)  # ids name folders and files (frames/<id>/...)
        if problem:
            raise h.err("id", problem)
        if hid in heliostats:
            raise h.err("id", f"duplicate heliostat id {hid!r}")
        dname = h.str_("drive")
        if dname not in drives:
            raise h.err(
                "drive", f"no drive template {dname!r} in [drives] (have: {', '.join(drives)})"
            )
        kin = HeliostatKinematics(position_enu_m=h.vec("position_enu_m"), **drives[dname])
        bus = h.str_("bus", next(iter(buses), ""))
        if buses and bus not in buses:
            raise h.err("bus", f"no bus {bus!r} in [buses] (have: {', '.join(buses)})")
        addr = h.int_("address", lo=1, hi=247)
        if (bus, addr) in seen_addr:
            raise h.err(
                "address",
                f"address {addr} on bus {bus!r} is already used by {seen_addr[(bus, addr)]!r}",
            )
        seen_addr[(bus, addr)] = hid
        mirror = _mirror(h.table("mirror"), base_mirror) if h.has("mirror") else base_mirror
        heliostats[hid] = Heliostat(hid, kin, mirror, bus, addr)
    if not heliostats:
        raise root.err("heliostats", "at least one heliostat is required")
    return FieldConfig(site, targets, heliostats, buses, safety, str(root.path))


# --------------------------------------------------------------------------- camera.toml
def load_camera(path: str | Path) -> CameraConfig:
    """Read and validate a ``camera.toml``."""
    root = _load_toml(path)
    root.check_unknown({"camera"})
    c = root.table("camera")
    c.check_unknown(
        {
            "width_px",
            "height_px",
            "fx_px",
            "fy_px",
            "cx_px",
            "cy_px",
            "dist_coeffs",
            "bit_depth",
            "position_enu_m",
            "look_at_enu_m",
            "roll_deg",
            "target",
            "corners_px",
            "black_level_dn",
            "reprojection_rms_px",
        }
    )
    if c.has("reprojection_rms_px"):  # written by `heliostat camera calibrate`; a record
        c.num("reprojection_rms_px", lo=0.0)
    w, h = c.int_("width_px", lo=16, hi=100_000), c.int_("height_px", lo=16, hi=100_000)
    k = np.array(
        [
            [c.num("fx_px", lo=0, lo_open=True), 0.0, c.num("cx_px", w / 2)],
            [0.0, c.num("fy_px", lo=0, lo_open=True), c.num("cy_px", h / 2)],
            [0.0, 0.0, 1.0],
        ]
    )
    dist = np.array(c.vec("dist_coeffs", 5, default=[0.0] * 5))
    bits = c.int_("bit_depth", 12)
    if bits not in (8, 10, 12, 14, 16):
        raise c.err("bit_depth", f"expected 8, 10, 12, 14 or 16, got {bits}")
    pos = r = None
    if c.has("position_enu_m") or c.has("look_at_enu_m"):
        pos = np.array(c.vec("position_enu_m"))
        try:
            r = look_at(pos, c.vec("look_at_enu_m"), math.radians(c.num("roll_deg", 0.0)))
        except ValueError as exc:
            raise c.err("look_at_enu_m", str(exc)) from None
    corners = None
    if c.has("corners_px"):
        raw = c.raw("corners_px")
        try:
            corners = np.asarray(raw, dtype=float)
        except (TypeError, ValueError):
            corners = None
        if corners is None or corners.shape != (4, 2) or not np.all(np.isfinite(corners)):
            raise c.err("corners_px", f"expected 4 [u, v] pairs (UL, UR, LR, LL), got {raw!r}")
    black = c.num("black_level_dn", 0.0, lo=0.0, hi=float(2**bits - 1))
    return CameraConfig(w, h, k, dist, bits, pos, r, c.str_("target", ""), corners, black)


# --------------------------------------------------------------------------- writing
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        if not math.isfinite(v):
            raise ValueError(f"cannot write non-finite number {v!r} to TOML")
        return repr(float(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple | np.ndarray):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Write nested dicts (tables), lists of dicts (arrays of tables) and scalars as TOML."""
    lines: list[str] = []

    def emit(d: Mapping[str, Any], prefix: str) -> None:
        scalars = {
            k: v
            for k, v in d.items()
            if not isinstance(v, Mapping)
            and not (isinstance(v, list) and v and isinstance(v[0], Mapping))
        }
        for k, v in scalars.items():
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, Mapping):
                lines.append("")
                lines.append(f"[{key}]")
                emit(v, key)
            elif isinstance(v, list) and v and isinstance(v[0], Mapping):
                for item in v:
                    lines.append("")
                    lines.append(f"[[{key}]]")
                    emit(item, key)

    emit(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def _mirror_to_dict(m: Mirror) -> dict[str, Any]:
    d: dict[str, Any] = dict(
        width_m=m.width_m,
        height_m=m.height_m,
        reflectivity=m.reflectivity,
        slope_error_mrad=m.slope_error_mrad,
    )
    if m.focal_length_m is not None:
        d["focal_length_m"] = m.focal_length_m
    return d


def _drive_to_dict(k: HeliostatKinematics) -> dict[str, Any]:
    return dict(
        type=k.drive,
        axis1_offset_enu_m=list(k.axis1_offset_enu_m),
        axis2_offset_enu_m=list(k.axis2_offset_enu_m),
        mirror_offset_enu_m=list(k.mirror_offset_enu_m),
        axis1=k.spec.axes[0].write(k.axis1),
        axis2=k.spec.axes[1].write(k.axis2),
    )


def field_to_dict(cfg: FieldConfig) -> dict[str, Any]:
    """A field config as plain data in the ``field.toml`` schema (one drive template per
    distinct nominal drive), for :func:`dumps_toml`. ``load_field`` reads it back equal."""
    s = cfg.site
    out: dict[str, Any] = {
        "site": dict(
            name=s.name,
            latitude_deg=s.latitude_deg,
            longitude_deg=s.longitude_deg,
            altitude_m=s.altitude_m,
        ),
        "safety": dict(
            max_correction_mrad=cfg.safety.max_correction_mrad,
            require_confirmation=cfg.safety.require_confirmation,
        ),
    }
    targets = []
    for t in cfg.targets.values():
        td: dict[str, Any] = dict(
            id=t.id,
            centre_enu_m=list(t.centre_enu_m),
            normal_enu=list(t.u_normal_enu),
            width_m=t.width_m,
            height_m=t.height_m,
        )
        if t.markers is not None:
            td["markers"] = dict(
                dictionary=t.markers.dictionary,
                ids=list(t.markers.ids),
                size_m=t.markers.size_m,
                inset_m=t.markers.inset_m,
            )
        if t.corner_marks is not None:
            cm = t.corner_marks
            td["corner_marks"] = dict(
                bar_width_m=cm.bar_width_m,
                arm_length_m=cm.arm_length_m,
                t_half_length_m=cm.t_half_length_m,
            )
            if cm.kinds is not None:
                td["corner_marks"]["kinds"] = list(cm.kinds)
        targets.append(td)
    out["targets"] = targets
    drives: dict[str, dict[str, Any]] = {}
    drive_of: dict[str, str] = {}
    for h in cfg.heliostats.values():
        d = _drive_to_dict(h.kinematics)
        name = next((n for n, v in drives.items() if v == d), None)
        if name is None:
            name = f"{d['type']}-{len(drives) + 1}"
            drives[name] = d
        drive_of[h.id] = name
    out["drives"] = drives
    if cfg.buses:
        out["buses"] = {
            b.name: dict(
                port=b.port,
                baudrate=b.baudrate,
                parity=b.parity,
                stopbits=b.stopbits,
                timeout_s=b.timeout_s,
            )
            for b in cfg.buses.values()
        }
    hs = []
    for h in cfg.heliostats.values():
        d = dict(
            id=h.id,
            position_enu_m=list(h.kinematics.position_enu_m),
            drive=drive_of[h.id],
            address=h.address,
            mirror=_mirror_to_dict(h.mirror),
        )
        if h.bus:
            d["bus"] = h.bus
        hs.append(d)
    out["heliostats"] = hs
    return out
