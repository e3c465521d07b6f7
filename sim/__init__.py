"""Simulator: sky, field, optics, camera and controllers standing in for a plant."""
