"""CLI commands, one module each; see :mod:`heliostat.cli`."""
