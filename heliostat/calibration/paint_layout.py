"""Find the PAINT files of one or many heliostats under a folder (no parsing here).

Layouts accepted (file names are the archive's, :mod:`heliostat.calibration.paint`):

PAINT's download layout
    ``<ID>/Properties/<ID>-heliostat-properties.json``,
    ``<ID>/Calibration/<record>-calibration-properties.json``.
The flat layout
    ``<ID>/<ID>-heliostat-properties.json`` beside its ``<record>-calibration-properties.json``.
ARTIST's tutorial layout
    ``<ID>/heliostat-properties.json`` (no id prefix: the id is the folder's name) beside
    the records; ``tower-measurements.json`` without the plant prefix.

A heliostat's *home* is the folder of its properties file, or that folder's parent when
it is named ``Properties``. A record belongs to the heliostat whose home is its nearest
ancestor; records under no home are listed as unassigned. The tower file is the nearest
``*tower-measurements.json`` in the home or any folder above it (also above the folder
given), else the only one anywhere under the folder given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from heliostat.errors import InputError

#: File-name endings of the archive (paint-csp ``paint_mappings``:
#: ``HELIOSTAT_PROPERTIES_SAVE_NAME``, ``CALIBRATION_PROPERTIES_IDENTIFIER``,
#: ``TOWER_FILE_NAME``); ARTIST's tutorials drop the prefix before the hyphen.
PROPERTIES_SUFFIX = "heliostat-properties.json"
RECORD_SUFFIX = "calibration-properties.json"
TOWER_SUFFIX = "tower-measurements.json"
#: Sub-folder names of PAINT's download layout (``SAVE_PROPERTIES``, ``SAVE_CALIBRATION``).
PROPERTIES_FOLDER = "Properties"
CALIBRATION_FOLDER = "Calibration"


@dataclass(frozen=True, slots=True)
class HeliostatFiles:
    """One heliostat's files.

    Attributes
    ----------
    heliostat_id : str
        The properties file's prefix (``AA31-heliostat-properties.json``), else the
        name of its home folder.
    properties : Path
    records : tuple of Path
        Its calibration records, sorted by path.
    tower : Path or None
        The tower-measurements file nearest to it (None: none found).
    """

    heliostat_id: str
    properties: Path
    records: tuple[Path, ...]
    tower: Path | None


@dataclass(frozen=True, slots=True)
class PaintLayout:
    """All heliostats found under ``root`` (sorted by id) and the records no heliostat
    claims."""

    root: Path
    heliostats: tuple[HeliostatFiles, ...]
    unassigned: tuple[Path, ...]


def _is(path: Path, suffix: str) -> bool:
    return path.name == suffix or path.name.endswith("-" + suffix)


def heliostat_id_of(properties: Path) -> str:
    """Id from ``<ID>-heliostat-properties.json``, else from the home folder's name."""
    if properties.name != PROPERTIES_SUFFIX:
        return properties.name[: -len("-" + PROPERTIES_SUFFIX)]
    return _home(properties).name


def _home(properties: Path) -> Path:
    parent = properties.parent
    return parent.parent if parent.name == PROPERTIES_FOLDER else parent


def _tower_for(home: Path, towers_below: list[Path]) -> Path | None:
    for folder in (home, *home.parents):
        found = sorted(p for p in folder.glob("*" + TOWER_SUFFIX) if _is(p, TOWER_SUFFIX))
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise InputError(f"{folder}: more than one tower-measurements file: {names}")
        if found:
            return found[0]
    return towers_below[0] if len(towers_below) == 1 else None


def find_paint_files(root: str | Path) -> PaintLayout:
    """Find every heliostat's properties, records and tower file under ``root``.

    Raises
    ------
    FileNotFoundError
        When ``root`` is not a folder.
    InputError
        When two heliostats share a home folder (their records cannot be told apart) or
        a folder holds two tower files.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    files = sorted(p for p in root.rglob("*.json") if p.is_file())
    props = [p for p in files if _is(p, PROPERTIES_SUFFIX)]
    records = [p for p in files if _is(p, RECORD_SUFFIX)]
    towers_below = [p for p in files if _is(p, TOWER_SUFFIX)]
    homes: dict[Path, Path] = {}
    for p in props:
        home = _home(p)
        if home in homes:
            raise InputError(
                f"{home}: two heliostat-properties files ({homes[home].name}, {p.name}) in "
                "one heliostat folder: give each heliostat its own folder"
            )
        homes[home] = p
    claimed: dict[Path, list[Path]] = {h: [] for h in homes}
    unassigned = []
    for r in records:
        owner = next((a for a in r.parents if a in homes), None)
        if owner is None:
            unassigned.append(r)
        else:
            claimed[owner].append(r)
    heliostats = [
        HeliostatFiles(heliostat_id_of(p), p, tuple(claimed[home]), _tower_for(home, towers_below))
        for home, p in homes.items()
    ]
    ids = [h.heliostat_id for h in heliostats]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InputError(f"{root}: heliostat id(s) {', '.join(dup)} found in more than one folder")
    heliostats.sort(key=lambda h: h.heliostat_id)
    return PaintLayout(root, tuple(heliostats), tuple(unassigned))
