"""Multi-objective successive halving decisions."""

from __future__ import annotations

import pytest

from nas.proxy.halving import decide, nsga_order


def test_a_run_on_the_front_always_continues():
    # Worst loss of all, but the fastest: nobody dominates it.
    d = decide(5.0, 100.0, peer_losses=[3.0, 3.1, 3.2, 3.3, 3.4], peer_speeds=[10, 20, 30, 40, 50])
    assert d.keep and d.dominated_by == 0


def test_a_dominated_run_outside_the_quota_stops():
    d = decide(5.0, 5.0, peer_losses=[3.0, 3.1, 3.2, 3.3, 3.4], peer_speeds=[10, 20, 30, 40, 50], eta=3)
    assert not d.keep and d.dominated_by == 5 and d.peers == 6
    assert "dominated by 5" in d.reason


def test_a_dominated_run_within_the_top_third_continues():
    # Dominated by one peer only, and ranked second of three: ceil(3/3) = 1, so it stops...
    assert not decide(3.5, 9.0, [3.0, 9.9], [10.0, 1.0], eta=3).keep
    # ...but with eta 1.5 the quota is ceil(3/1.5) = 2 and it continues.
    assert decide(3.5, 9.0, [3.0, 9.9], [10.0, 1.0], eta=1.5).keep


def test_first_run_at_a_rung_continues():
    assert decide(4.0, 1.0, [], []).keep


def test_nsga_order_fronts_first():
    order = nsga_order([1.0, 2.0, 3.0, 1.5], [1.0, 2.0, 3.0, 0.5])
    assert set(order[:3]) == {0, 1, 2} and order[3] == 3


def test_eta_must_exceed_one():
    with pytest.raises(ValueError):
        decide(1.0, 1.0, [], [], eta=1.0)
