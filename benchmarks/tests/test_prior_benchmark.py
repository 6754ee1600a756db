"""benchmarks/prior.py: the view accuracy's confidence interval and its breakdowns."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from prior import view_confusion, view_per_kind, wilson_interval  # noqa: E402


@pytest.mark.parametrize("successes,n", [(45, 60), (3, 20), (119, 120)])
def test_wilson_ends_are_where_the_score_test_is_at_z(successes, n):
    """Each end p solves (p_hat - p)^2 = z^2 p (1 - p) / n, and p_hat lies between them."""
    p_hat, z = successes / n, 1.96
    low, high = wilson_interval(successes, n)
    for p in (low, high):
        assert (p_hat - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, abs=3e-4)
    assert low < p_hat < high


def test_wilson_of_the_shipped_view_figure():
    assert wilson_interval(45, 60) == [0.628, 0.842]  # 0.750 (45 of 60), worked by hand
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_view_breakdowns_count_rows_by_kind_and_asked_view():
    rows = [(("car", "red", "front"), "car", "red", "side"), (("car", "red", "back"), "car", "red", "back"),
            (("mug", "blue", "front"), "cube", "blue", "front"), (("mug", "blue", "front"), "mug", "blue", "front")]
    assert view_per_kind(rows) == {"car": 0.5, "mug": 1.0}
    assert view_confusion(rows) == {"front": {"side": 1, "front": 2}, "back": {"back": 1}}
