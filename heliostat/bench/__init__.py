"""Benchmark harnesses the CLI needs at run time (``heliostat bench ...``).

Unlike the plant's run-time packages, this package may import the simulator (``sim``):
its harnesses build held-out simulated campaigns and frames.

- :mod:`heliostat.bench.compare` — classical vs learned methods: spot accuracy, pointing,
  compute energy, gain and payback (``heliostat bench compare``);
- :mod:`heliostat.bench.real_vision` — the sunlit classical detector vs the
  real-background model on composites of the real target and the real samples
  (``heliostat bench compare --real DIR``).

Nothing is imported here, so ``import heliostat.bench`` loads neither ``sim`` nor cv2.
"""
