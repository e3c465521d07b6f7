"""``heliostat sim ...``: simulator commands (the simulator is imported lazily)."""

from __future__ import annotations

import argparse

from heliostat.cli import register_all

#: Modules that register ``heliostat sim`` subcommands.
SIM_COMMANDS: tuple[str, ...] = (
    "heliostat.commands.sim_campaign",
    "heliostat.commands.sim_controllers",
    "heliostat.commands.sim_serve",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat sim`` parser (with ``sim campaign``, ``sim controllers`` and
    ``sim serve``) to ``sub``, the CLI's top-level subcommands."""
    p = sub.add_parser(
        "sim",
        help="simulator: campaigns, emulated controllers, the plant in a box",
        description="Run parts of the simulated plant.",
    )
    simsub = p.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")
    register_all(simsub, SIM_COMMANDS)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
