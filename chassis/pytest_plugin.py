"""pytest plugin (entry point `segw_chassis`): bring a chassis up, always tear it down.

    def test_cards(chassis_factory):
        ch = chassis_factory("topologies/asr5500.yaml")
        assert "Active" in ch.exec("show card table")[0].output

    @pytest.mark.chassis_topology("topologies/asr9000.yaml")
    def test_default(running_chassis): ...

Each chassis gets its own run directory under the test's tmp_path, hence its own
ipc socket directory, so tests run in parallel under pytest-xdist. `netns=NAME` starts it
inside an existing network namespace (chassis.client.up); tear that namespace down only
after this fixture's teardown (request the namespace's fixture first).
"""

from __future__ import annotations

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "chassis_topology(path): topology file for the running_chassis fixture"
    )


@pytest.fixture
def chassis_factory(tmp_path_factory):
    from chassis import client

    started = []

    def factory(topology=None, *, run_dir=None, wait="cards", timeout=30.0, netns=None):
        run_dir = run_dir or tmp_path_factory.mktemp("chassis")
        try:
            chassis = client.up(topology, run_dir, wait=wait, timeout=timeout, netns=netns)
        except BaseException:
            client.down(run_dir)
            raise
        started.append(chassis)
        return chassis

    yield factory
    for chassis in started:
        chassis.down()


@pytest.fixture
def running_chassis(request, chassis_factory):
    marker = request.node.get_closest_marker("chassis_topology")
    return chassis_factory(marker.args[0] if marker else None)
