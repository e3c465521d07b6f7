"""The ``heliostat`` command line.

Each command lives in its own module under :mod:`heliostat.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning an exit code. Errors a user can cause (bad config, bad
input file, unreachable controller) are reported as one clear line on stderr with exit
code 2, never as a traceback; ``HELIOSTAT_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

#: Modules that register top-level commands, in help order.
COMMANDS: tuple[str, ...] = (
    "heliostat.commands.demo",
    "heliostat.commands.campaign",
    "heliostat.commands.plan",
    "heliostat.commands.history",
    "heliostat.commands.sun",
    "heliostat.commands.config",
    "heliostat.commands.camera",
    "heliostat.commands.detect",
    "heliostat.commands.calibrate",
    "heliostat.commands.paint",
    "heliostat.commands.bridge",
    "heliostat.commands.ledger",
    "heliostat.commands.bench",
    "heliostat.commands.sim",
)


def register_all(sub: argparse._SubParsersAction, modules: Sequence[str]) -> None:
    """Import each command module and let it register its parser.

    A module that does not exist yet is skipped (commands land one by one); any other
    import error propagates.
    """
    for mod in modules:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name == mod:
                continue
            raise
        module.register(sub)


class UserError(Exception):
    """An error caused by the user's input, reported without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heliostat",
        description="Heliostat calibration: vision, kinematic fits, firmware bridge, "
        "simulator and energy ledger.",
    )
    from heliostat import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_all(sub, COMMANDS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if os.environ.get("HELIOSTAT_DEBUG"):
            raise
        from heliostat.errors import is_user_error

        kind = "error" if is_user_error(exc) else f"internal error ({type(exc).__name__})"
        print(f"heliostat: {kind}: {exc}", file=sys.stderr)
        return 2 if is_user_error(exc) else 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
