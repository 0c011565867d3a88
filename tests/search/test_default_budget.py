"""The default proxy stage at its real budget (minutes: `pytest -m slow`; CI runs the fast suite)."""

from __future__ import annotations

import json

import pytest

from nas.cli import main


@pytest.mark.slow
def test_default_search_trains_a_dozen_shapes_at_the_default_budget(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--target", "pixel8", "--space", "mobilellm", "--no-progress", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    proxy = data["proxy"]
    assert proxy["done"] and proxy["chosen"] == 12 and proxy["pareto"]
    assert sum(proxy["states"].get(s, 0) for s in ("COMPLETE", "PRUNED")) == 12
    # The law recommends on the latency stage's front; the proxy stage is its check on the user's text.
    check = data["recommendation"]["law_check"]
    assert data["recommendation"]["study"] == data["study"] and check["trained"] >= 1
