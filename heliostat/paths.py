"""Safe names and paths built from data.

Heliostat ids (and other ids that become file or folder names) must match
:data:`SAFE_ID_PATTERN`: a letter or digit, then up to 63 letters, digits, ``_``, ``.``
or ``-``, and no ``..`` anywhere. So an id is one path component that can never climb out
of its folder, start a hidden file or an option (``-x``), or be empty.

Every path built from data (a frame name from a CSV, a heliostat id in a frames folder)
is joined with :func:`join_inside`, which refuses a result outside its folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from heliostat.errors import InputError

#: What an id that becomes part of a path must look like (docs/config.md).
SAFE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_SAFE_ID = re.compile(SAFE_ID_PATTERN)


def id_problem(value: object) -> str | None:
    """What is wrong with an id for use in a path, or None when it is safe."""
    if not isinstance(value, str):
        return f"expected a string, got {value!r}"
    if not _SAFE_ID.fullmatch(value) or ".." in value:
        return (
            f"{value!r} is not a safe id: expected 1-64 characters, letters, digits, '_', "
            f"'.' or '-', starting with a letter or digit, without '..' "
            f"(pattern {SAFE_ID_PATTERN})"
        )
    return None


def join_inside(base: str | Path, relative: str | Path, what: str = "path") -> Path:
    """``base / relative``, refused when it would lie outside ``base``.

    Parameters
    ----------
    base : str or Path
        The folder the path must stay in.
    relative : str or Path
        A relative path from data (a frame column, an id-derived name).
    what : str
        What the path is, for the message (e.g. ``"observations.csv line 4: frame"``).

    Raises
    ------
    InputError
        For an absolute ``relative`` or one that climbs out of ``base`` (``..``, or a
        symbolic link inside ``base`` that points outside it).
    """
    rel = Path(relative)
    if rel.is_absolute() or rel.anchor:
        raise InputError(
            f"{what}: {str(relative)!r} is an absolute path; expected one inside {base}"
        )
    b = Path(base)
    p = b / rel
    root = b.resolve()
    if not p.resolve().is_relative_to(root):
        raise InputError(f"{what}: {str(relative)!r} leads outside {b}; refused")
    return p
