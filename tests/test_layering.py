"""The layering rule of DESIGN.md, checked on the source: the plant's run-time code never
imports the simulator, and the bridge never imports the vision package.

* ``heliostat/`` (outside ``commands/``, ``ml/training/`` and ``bench/``) and
  ``firmware_bridge/`` hold no ``import sim`` / ``from sim... import``, not even lazily
  inside a function;
* ``heliostat/commands/`` (the CLI) imports ``sim`` only inside functions;
* ``firmware_bridge/`` holds no import of ``heliostat.vision``;
* importing the plant's packages in a fresh interpreter leaves ``sim`` (and, for the
  bridge, ``heliostat.vision``) out of ``sys.modules``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Parts of heliostat/ that may import the simulator (the CLI only lazily).
MAY_IMPORT_SIM = ("heliostat/commands/", "heliostat/ml/training/", "heliostat/bench/")


def _imported_modules(tree: ast.AST, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a parsed file; with ``top_level_only``
    those not inside a function (module level, class bodies, if/try blocks)."""
    out: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if not (top_level_only and inside):
                if isinstance(child, ast.Import):
                    out.extend((child.lineno, a.name) for a in child.names)
                elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                    out.append((child.lineno, child.module))
                    # ``from heliostat import vision`` names the subpackage as an alias
                    out.extend((child.lineno, f"{child.module}.{a.name}") for a in child.names)
            visit(child, inside)

    visit(tree, False)
    return out


def _is(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def _rel(p: Path) -> str:
    return p.relative_to(REPO).as_posix()


def _violations(files, package: str, top_level_only: bool = False) -> list[str]:
    bad = []
    for p in files:
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
        for line, mod in _imported_modules(tree, top_level_only):
            if _is(mod, package):
                bad.append(f"{_rel(p)}:{line} imports {mod}")
    return bad


def test_the_checker_finds_lazy_and_aliased_imports():
    src = (
        "import os\n"
        "from sim.optics import flux_spot\n"
        "def f():\n"
        "    import sim.camera as c\n"
        "    from heliostat import vision\n"
    )
    mods = _imported_modules(ast.parse(src))
    assert (2, "sim.optics") in mods and (4, "sim.camera") in mods
    assert (5, "heliostat.vision") in mods
    assert not any(_is(m, "sim") for m in ("simulator", "heliostat.sim", "simple"))
    top = _imported_modules(ast.parse(src), top_level_only=True)
    assert {line for line, m in top if _is(m, "sim")} == {2}


def test_plant_code_never_imports_sim():
    plant = [p for p in _sources("heliostat") if not _rel(p).startswith(MAY_IMPORT_SIM)]
    assert len(plant) > 30  # the walk found the package
    files = plant + _sources("firmware_bridge")
    assert _violations(files, "sim") == []


def test_cli_imports_sim_only_inside_functions():
    files = _sources("heliostat/commands") + [REPO / "heliostat" / "cli.py"]
    assert _violations(files, "sim", top_level_only=True) == []


def test_bridge_never_imports_vision():
    assert _violations(_sources("firmware_bridge"), "heliostat.vision") == []


@pytest.mark.parametrize(
    ("modules", "absent"),
    [
        (
            [
                "heliostat.campaign",
                "heliostat.calibration",
                "heliostat.vision",
                "heliostat.ledger",
                "heliostat.optics",
                "heliostat.kinematics.pointing",
                "heliostat.cli",
            ],
            ["sim"],
        ),
        (["firmware_bridge", "firmware_bridge.safety"], ["sim", "heliostat.vision"]),
    ],
)
def test_importing_plant_packages_loads_no_simulator(modules, absent):
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] == 'sim' or m in {absent!r}))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", f"{modules} loaded {run.stdout.strip()}"
