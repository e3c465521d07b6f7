"""``--json`` on every command: each leaf command of the parser takes it, and the
commands whose output is otherwise a sentence print one JSON document with it."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from heliostat.cli import build_parser, main


def _leaves(parser: argparse.ArgumentParser, prefix: str = "heliostat"):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for sp in subs:
        for name, child in sp.choices.items():
            yield from _leaves(child, f"{prefix} {name}")


def test_every_command_takes_json():
    leaves = dict(_leaves(build_parser()))
    assert len(leaves) > 15 and "heliostat bridge apply" in leaves
    missing = [
        name
        for name, p in leaves.items()
        if not any("--json" in a.option_strings for a in p._actions)
    ]
    assert missing == []


def test_ledger_add_and_export_json(tmp_path, capsys):
    db = str(tmp_path / "h.sqlite")
    argv = ["ledger", "add", "--db", db, "--stage", "vision", "--method", "classical"]
    argv += ["--energy-kwh", "0.25", "--source", "metered by hand"]
    assert main(argv) == 0
    assert capsys.readouterr().out == f"added a vision/classical entry of 0.25 kWh to {db}\n"
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["db"] == db and doc["added"]["energy_j"] == 0.25 * 3.6e6  # 1 kWh = 3.6 MJ exactly
    csv = tmp_path / "e.csv"
    assert main(["ledger", "export", "--db", db, "--csv", str(csv), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"rows": 2, "csv": str(csv)}
    assert len(pd.read_csv(csv)) == 2
