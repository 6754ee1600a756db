"""The 2D distillation probe (benchmarks/distill_2d.py): its roughness measure, and that a step is an
Adam step on the variant's own gradient."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from distill_2d import distill, roughness  # noqa: E402

from sds3d.cameras import orbit_cameras  # noqa: E402
from sds3d.generate import GenerateConfig, make_guidance  # noqa: E402
from sds3d.guidance.registry import load_prior  # noqa: E402
from sds3d.prompts import PromptConfig, PromptProcessor  # noqa: E402
from sds3d.types import RenderOutput  # noqa: E402


def test_roughness_is_zero_on_flat_images_and_four_ninths_inside_a_checkerboard():
    assert roughness(torch.full((2, 3, 16, 16), 0.7)) == pytest.approx(0.0, abs=1e-6)

    def board(n):
        return ((torch.arange(n)[:, None] + torch.arange(n)[None]) % 2).float().expand(1, 3, n, n)

    # away from the border each pixel differs from its 3x3 mean by 4/9; the replicated border adds a
    # little, less the larger the image
    assert roughness(board(64)) == pytest.approx(4 / 9, abs=0.01)
    assert roughness(board(16)) > roughness(board(64)) > 4 / 9


@pytest.mark.parametrize("guidance", ["sds", "sdi"])
def test_one_distill_step_is_one_adam_step_on_the_variants_gradient(guidance):
    """Adam's first step moves each logit by lr * sign(gradient) (up to its eps); the reference draws
    the same initial logits and the same guidance call from a generator with the same seed."""
    prior = load_prior("embedded")
    config = GenerateConfig(prompt="a yellow chair", guidance=guidance, steps=1)
    image = distill(config, prior, lr=0.05)

    variant = make_guidance(config, prior)
    prompts = PromptProcessor(prior, PromptConfig(config.prompt, config.negative_prompt, config.view_dependent))
    cameras = orbit_cameras(torch.tensor([15.0]), torch.tensor([0.0]), 2.5, 40.0, prior.resolution)
    generator = torch.Generator().manual_seed(config.seed)
    logits = (0.5 * torch.randn(1, prior.resolution, prior.resolution, 3, generator=generator)).requires_grad_()
    rgb = torch.sigmoid(logits)
    alpha = torch.ones_like(rgb[..., :1])
    render = RenderOutput(rgb=rgb, alpha=alpha, depth=torch.zeros_like(alpha))
    variant(render, prompts(cameras), cameras, 0, generator).loss.backward()
    expected = torch.sigmoid(logits.detach() - 0.05 * logits.grad.sign()).permute(0, 3, 1, 2)
    assert image.shape == (1, 3, prior.resolution, prior.resolution)
    torch.testing.assert_close(image, expected, atol=1e-5, rtol=0)
