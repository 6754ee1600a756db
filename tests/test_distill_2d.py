"""The 2D distillation probe (benchmarks/distill_2d.py): its roughness measure and one short run."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from distill_2d import distill, roughness  # noqa: E402

from sds3d.generate import GenerateConfig  # noqa: E402
from sds3d.guidance.registry import load_prior  # noqa: E402


def test_roughness_is_zero_on_flat_images_and_four_ninths_inside_a_checkerboard():
    assert roughness(torch.full((2, 3, 16, 16), 0.7)) == pytest.approx(0.0, abs=1e-6)
    def board(n):
        return ((torch.arange(n)[:, None] + torch.arange(n)[None]) % 2).float().expand(1, 3, n, n)

    # away from the border each pixel differs from its 3x3 mean by 4/9; the replicated border adds a
    # little, less the larger the image
    assert roughness(board(64)) == pytest.approx(4 / 9, abs=0.01)
    assert roughness(board(16)) > roughness(board(64)) > 4 / 9


def test_distill_moves_the_image_and_keeps_it_in_range():
    torch.manual_seed(0)
    prior = load_prior("embedded")
    config = GenerateConfig(prompt="a yellow chair", guidance="sds", steps=3)
    image = distill(config, prior, lr=0.05)
    assert image.shape == (1, 3, prior.resolution, prior.resolution)
    assert 0.0 <= image.min().item() and image.max().item() <= 1.0
    start = torch.sigmoid(0.5 * torch.randn(1, prior.resolution, prior.resolution, 3,
                                            generator=torch.Generator().manual_seed(0))).permute(0, 3, 1, 2)
    assert (image - start).abs().max().item() > 1e-3
