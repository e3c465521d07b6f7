"""The simulator's pytest plugin (``sim.testing``), exercised as a downstream project uses
it: pytest's own ``pytester`` runs a tiny example project (``tests/data/downstream_example``:
a conftest enabling the plugin and tests of a firmware/SCADA team, a research group and a
plant integrator) in a fresh pytest session; plus the fixtures' own contracts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.plant import PlantClock

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).resolve().parent / "data" / "downstream_example"


def _example_project(pytester: pytest.Pytester) -> None:
    for f in sorted(EXAMPLE.glob("*.py")):
        (pytester.path / f.name).write_text(f.read_text())


def test_the_example_project_passes_with_the_plugin(pytester):
    _example_project(pytester)
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    # 3 fault scenarios of the Modbus test + spot finder + watchdog + day of campaign
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        [
            "*test_stock_modbus_client_reads_every_controller?clean? PASSED*",
            "*test_stock_modbus_client_reads_every_controller?lossy? PASSED*",
            "*test_stock_modbus_client_reads_every_controller?noisy? PASSED*",
            "*test_a_day_of_campaign_recovers_the_hidden_truth PASSED*",
        ]
    )


def test_without_the_plugin_the_fixtures_are_unknown(pytester):
    # the plugin is opt-in (no pytest11 entry point): a project that does not enable it
    # does not get it
    pytester.makepyfile("def test_x(heliostat_plant):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'heliostat_plant' not found*"])


def test_plugin_enabled_on_the_command_line_and_markers_registered(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.heliostat_plant(n=3, seed=11)
        def test_plant(heliostat_plant, emulated_bus):
            assert sorted(heliostat_plant.controllers) == ["H001", "H002", "H003"]
            assert sorted(emulated_bus.controllers) == [1, 2, 3]
            assert emulated_bus.port == heliostat_plant.port
            assert "port = \\"" + emulated_bus.port + "\\"" in emulated_bus.field_path.read_text()

        @pytest.mark.heliostat_plant(n=2, drives="linear")
        def test_linear(heliostat_plant, emulated_bus):
            from firmware_bridge import registers as R

            for hid, h in heliostat_plant.field.heliostats.items():
                assert h.kinematics.drive == "linear"
                ctl = emulated_bus.by_heliostat[hid]
                assert ctl.regs[R.REG_DRIVE] == R.drive_code("linear")
        """
    )
    result = pytester.runpytest("-p", "sim.testing", "-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=2)
    result = pytester.runpytest("-p", "sim.testing", "-p", "no:cacheprovider", "--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.heliostat_plant(*", "@pytest.mark.fault_scenarios(*"]
    )


def test_an_unknown_scenario_or_marker_argument_is_a_clear_error(pytester):
    pytester.makeconftest('pytest_plugins = ["sim.testing"]\n')
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.fault_scenarios("clean", "thunderstorm")
        def test_a(fault_scenario):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*unknown fault scenario(s) 'thunderstorm'; known: clean*"])

    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.heliostat_plant(heliostats=3)
        def test_b(heliostat_plant):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*heliostat_plant: unknown argument(s) heliostats; known: n*"])


def test_every_scenario_runs_by_default_and_reaches_the_bus(pytester):
    pytester.makeconftest('pytest_plugins = ["sim.testing"]\n')
    pytester.makepyfile(
        """
        from sim.testing import FAULT_SCENARIOS

        def test_s(fault_scenario, emulated_bus):
            assert emulated_bus.faults == fault_scenario.faults
            ctl = emulated_bus.controllers[1]
            want = fault_scenario.watchdog_s if fault_scenario.watchdog_s is not None else 60.0
            assert ctl.watchdog_timeout_ds == round(want * 10)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    from sim.testing import FAULT_SCENARIOS

    result.assert_outcomes(passed=len(FAULT_SCENARIOS))


def test_the_faults_of_a_scenario_happen_on_the_line(pytester):
    # 200 reads through the lossy scenario (5 % of frames lost, request and reply apart):
    # the bus's own count of dropped frames is 1 - 0.95**2 ≈ 9.8 % of requests, far from 0
    pytester.makeconftest('pytest_plugins = ["sim.testing"]\n')
    pytester.makepyfile(
        """
        import pytest
        from firmware_bridge.errors import ControllerTimeout
        from firmware_bridge.transport import ModbusLink

        @pytest.mark.fault_scenarios("lossy")
        @pytest.mark.heliostat_plant(n=1)
        def test_lossy(emulated_bus, fault_scenario):
            lost = 0
            with ModbusLink(emulated_bus.port, timeout_s=0.02) as link:
                for _ in range(200):
                    try:
                        link.read_registers(1, 0, 1, input_regs=True)
                    except ControllerTimeout:
                        lost += 1
            assert emulated_bus.stats.dropped > 0
            assert lost == emulated_bus.stats.dropped
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_plant_clock_is_both_clocks():
    c = PlantClock("2025-04-01T10:00:00Z")
    assert c() == 0.0
    c.sleep(90.0)
    assert c() == 90.0
    assert c.now_utc() == pd.Timestamp("2025-04-01T10:01:30Z")
    c.advance_to("2025-04-01T11:00:00Z")
    assert c() == 3600.0
    with pytest.raises(ValueError, match="backwards"):
        c.advance_to("2025-04-01T10:00:00Z")
    with pytest.raises(ValueError, match="timezone"):
        PlantClock("2025-04-01T10:00:00")


def test_sunlit_camera_frames_carry_the_truth(tmp_path):
    # the sunlit style: a real empty-target image, 8-bit, the board at 50-62 % of full
    # scale (sim.real_texture.BOARD_FRACTION_RANGE), the spot's truth on the target
    from sim.plant import make_sim_plant
    from sim.testing import PlantCamera

    clock = PlantClock("2025-04-01T10:00:00Z")
    sp = make_sim_plant(tmp_path, n=1, clock=clock, style="sunlit")
    try:
        assert sp.plant().target.markers is None  # a real board has no ArUco markers
        steps = sp.on_target_steps("H001", clock.now_utc())
        sp.move("H001", steps)
        clock.advance(45)
        cam = PlantCamera(sp, clock, seed=3)
        on = cam.shoot("H001", "on")
        sp.move("H001", (steps[0], steps[1] + 3000))  # 3 deg of elevation: off the target
        clock.advance(10)
        off = cam.shoot("H001", "off")
    finally:
        sp.stop()
    assert on.image.dtype == np.uint8 and off.image.dtype == np.uint8
    assert on.truth is not None and off.truth is None
    assert on.truth.fraction_on_target > 0.5
    assert abs(on.truth.centroid_xy_m[0]) < cam.target.width_m / 2
    u, v = np.rint(on.truth.centroid_px).astype(int)
    # the beam brightens the board where the truth says the spot is (contrast >= 1.2)
    assert int(on.image[v, u]) > int(off.image[v, u]) + 10


@pytest.mark.parametrize("style", ["aruco", "sunlit"])
def test_a_stowed_heliostat_gives_a_frame_without_truth(tmp_path, style):
    # stowed (mirror facing up) at 10:00 the beam goes skywards and never meets the
    # target plane: the camera still delivers frames of the empty target, with no truth
    from sim.plant import make_sim_plant
    from sim.testing import PlantCamera

    clock = PlantClock("2025-04-01T10:00:00Z")
    sp = make_sim_plant(tmp_path, n=1, clock=clock, style=style)
    try:
        cam = PlantCamera(sp, clock, seed=2)
        on, off = cam.pair("H001")
    finally:
        sp.stop()
    assert on.truth is None and off.truth is None
    assert on.image.shape == off.image.shape == (208, 256)
    # the same empty target in both (sensor noise and, for sunlit, ambient drift and
    # exposure apart): mean levels within 10 %
    assert abs(float(on.image.mean()) / float(off.image.mean()) - 1.0) < 0.1
