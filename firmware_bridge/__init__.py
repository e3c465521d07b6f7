"""Firmware bridge: Modbus RTU delivery of corrections to heliostat controllers.

* :mod:`firmware_bridge.registers` — the controller register map and pure codecs
  (``docs/controller-registers.md``);
* :mod:`firmware_bridge.transport` — :class:`ModbusLink`, pymodbus's serial client on
  any pyserial port or URL;
* :mod:`firmware_bridge.delivery` — :class:`Bridge`: command ids, read-back
  confirmation, bounded retries with back-off, per-controller health;
* :mod:`firmware_bridge.journal` — the SQLite (WAL) journal that makes a batch resumable;
* :mod:`firmware_bridge.safety` — limits, maximum correction and address checks;
* :mod:`firmware_bridge.errors` — ``ActuatorError(IOError)`` and its subclasses.

This package never imports ``sim`` or ``heliostat.vision``.
"""
