"""Pareto masks, hypervolume, normalisation and the knee: the one implementation every layer uses."""

from __future__ import annotations

import numpy as np
import pytest

from nas.study.pareto import Normaliser, hypervolume, knee_index, pareto_mask, pareto_mask_max
from tests.helpers import brute_pareto_mask


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_pareto_mask_matches_brute_force(k):
    rng = np.random.default_rng(k)
    pts = rng.integers(0, 6, size=(200, k)).astype(float)  # many ties and duplicates
    assert np.array_equal(pareto_mask(pts), brute_pareto_mask(pts))


def test_hypervolume_2d_and_3d_exact():
    assert hypervolume(np.array([[0.0, 0.0]]), [1.0, 1.0]) == pytest.approx(1.0)
    # Two boxes [0,1]x[0.5,1] and [0.5,1]x[0,1] overlap in [0.5,1]x[0.5,1]: 0.5 + 0.5 - 0.25.
    assert hypervolume(np.array([[0.0, 0.5], [0.5, 0.0], [0.9, 0.9]]), [1, 1]) == pytest.approx(0.75)
    pts3 = np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    # Union of three boxes: 3 * 0.25 - 3 * 0.125 + 0.125.
    assert hypervolume(pts3, [1, 1, 1]) == pytest.approx(0.5)
    assert hypervolume(np.array([[2.0, 0.0]]), [1, 1]) == 0.0


def test_hypervolume_matches_grid_count_3d():
    rng = np.random.default_rng(0)
    pts = rng.integers(0, 10, size=(15, 3)) / 10.0
    grid = np.stack(np.meshgrid(*[np.arange(10) / 10.0 + 0.05] * 3, indexing="ij"), -1).reshape(-1, 3)
    covered = np.any(np.all(grid[:, None, :] >= pts[None, :, :], axis=2), axis=1)
    assert hypervolume(pts, [1, 1, 1]) == pytest.approx(covered.mean())


def test_normaliser_scales_to_unit_box():
    norm = Normaliser.from_points(np.array([[0.0, 10.0], [4.0, 30.0]]))
    assert np.allclose(norm(np.array([[2.0, 20.0]])), [[0.5, 0.5]])
    assert norm.hypervolume(np.array([[0.0, 10.0]])) == pytest.approx(1.1 * 1.1)


def test_pareto_mask_max_orients_each_column():
    pts = [(1, 5), (5, 1), (3, 3), (2, 2), (3, 3), (0, 0)]
    assert pareto_mask_max(pts, [True, True]).tolist() == [True, True, True, False, True, False]
    assert pareto_mask_max([(1, 5), (2, 4)], [False, True]).tolist() == [True, False]  # minimise x
    assert pareto_mask_max([], [True]).tolist() == []


def test_knee_index():
    # A front bulging toward the ideal corner: the bulge is the knee.
    assert knee_index([1, 2, 9, 10], [10, 9.5, 9, 1]) == 2
    # A straight front: every point is as good a trade; the tie goes to the higher quality.
    assert knee_index([1, 2, 9, 10], [10, 9, 2, 1]) == 0
    xs, ys = [0, 1, 5, 10], [10, 9, 8, 0]
    assert knee_index(xs, ys) == 2
    assert knee_index([3], [4]) == 0
    assert knee_index([1, 2], [5, 4]) == 0  # two points: the higher quality


def test_the_knee_with_a_tie_is_the_fastest_shape_within_the_tie_of_the_fronts_knee():
    from nas.study.pareto import knee_pick

    rng = np.random.default_rng(3)
    speeds = np.sort(rng.random(60)) * 100 + 1
    quality = -np.log(speeds) * 0.1 + rng.normal(0, 0.01, 60)  # a smooth front, slower is better
    plain = knee_pick(speeds, quality)
    assert pareto_mask_max(np.column_stack([speeds, quality]), [True, True])[plain]
    tied = knee_pick(speeds, quality, tie=0.05)
    assert speeds[tied] >= speeds[plain] and quality[tied] >= quality[plain] - 0.05
    assert not any(speeds[i] > speeds[tied] and quality[i] >= quality[plain] - 0.05 for i in range(60))


def test_picks_with_noise_prefer_the_faster_of_tied_shapes():
    from nas.study.pareto import picks

    # (speed, quality): d is the best by 0.01, within the noise of c, which is twice as fast
    keys = ["a", "b", "c", "d"]
    speeds, quality = [100.0, 60.0, 40.0, 20.0], [-3.0, -2.5, -2.30, -2.29]
    exact = picks(keys, speeds, quality)
    assert exact["best-quality"] == "d" and exact["fastest"] == "a"
    noisy = picks(keys, speeds, quality, tie=0.05)
    assert noisy["best-quality"] == "c" and noisy["fastest"] == "a" and noisy["knee"] in ("b", "c")
    assert picks(keys, speeds, [-2.3, -2.3, -2.3, -2.3], tie=0.05) == {"knee": "a", "fastest": "a", "best-quality": "a"}
