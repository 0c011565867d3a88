"""Shared fixtures. Every test gets its own NAS_HOME so no test reads or writes the user's data."""

from __future__ import annotations

import pytest

from tests import helpers
from tests.postgres import running_postgres


@pytest.fixture(autouse=True)
def nas_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("nas_home")
    monkeypatch.setenv("NAS_HOME", str(home))
    return home


@pytest.fixture
def tiny_arch():
    from nas.core.arch import ArchConfig

    return ArchConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                      vocab_size=256, max_seq_len=256)


@pytest.fixture
def fake_graphs(monkeypatch):
    """The graph builder that profiling and bundles call, swapped for a tiny real ONNX graph."""
    import nas.latency.bundle
    import nas.latency.profiling

    module = helpers.fake_graphs_module()
    monkeypatch.setattr(nas.latency.profiling, "graphs", module)
    monkeypatch.setattr(nas.latency.bundle, "graphs", module)
    return module


@pytest.fixture
def fake_space(monkeypatch):
    import nas.spaces

    monkeypatch.setattr(nas.spaces, "load_space", lambda name: helpers.FakeSpace(), raising=False)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (tests/postgres.py), for the tests of many workers on one study. Its absence is a
    failure, not a skip: .ci/run installs Debian's postgresql package."""
    try:
        with running_postgres() as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def postgres_url(postgres_server):
    return postgres_server.url
