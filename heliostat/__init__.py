"""Heliostat calibration: what runs on the plant."""

__version__ = "0.1.0"
