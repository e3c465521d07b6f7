# A downstream project's conftest.py: enable the simulator's pytest plugin.
pytest_plugins = ["sim.testing"]
