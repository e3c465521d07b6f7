"""Firmware bridge: Modbus RTU delivery of corrections to heliostat controllers."""
