"""The guidance table's saturation measure and its ground-truth reference (benchmarks/guidance_table.py)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from guidance_table import ground_truth_saturation, saturation  # noqa: E402


def test_saturation_of_known_colours_over_the_foreground_only():
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25], [0.3, 0.3, 0.3], [0.0, 0.0, 1.0]]).reshape(1, 2, 2, 3)
    alpha = torch.tensor([1.0, 1.0, 1.0, 0.0]).reshape(1, 2, 2, 1)  # the blue pixel is background
    assert saturation(rgb, alpha) == pytest.approx((1.0 + 0.5 + 0.0) / 3)


def test_ground_truth_saturation_of_the_micro_world_objects():
    """Shading scales a flat colour, which leaves its saturation unchanged: black and white objects are
    near 0, a red one near 1, and the mean over prompts is the mean of the parts."""
    black, white, red = (ground_truth_saturation([p]) for p in ("a black star", "a white tree", "a red airplane"))
    assert black < 0.05 and white < 0.15 and red > 0.8
    assert ground_truth_saturation(["a black star", "a red airplane"]) == pytest.approx((black + red) / 2)
