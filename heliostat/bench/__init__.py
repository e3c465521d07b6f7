"""Benchmark harnesses the CLI needs at run time (``heliostat bench ...``).

Unlike the plant's run-time packages, this package may import the simulator (``sim``):
its harnesses build held-out simulated campaigns and frames.

- :mod:`heliostat.bench.compare` — classical vs learned methods: spot accuracy, pointing,
  compute energy, gain and payback (``heliostat bench compare``).

Nothing is imported here, so ``import heliostat.bench`` loads neither ``sim`` nor cv2.
"""
