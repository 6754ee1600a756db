"""Alpha regularisers (sparsity, entropy) and how a guidance config weights them into the loss."""

import math

import pytest
import torch
from toy_priors import GaussianToyPrior

from sds3d.guidance.dsd import DSD, DSDConfig
from sds3d.guidance.sdi import SDI, SDIConfig
from sds3d.guidance.sds import SDS, SDSConfig
from sds3d.representations.alpha_regularizers import alpha_entropy, alpha_sparsity


def test_analytic_values():
    empty, full, half = torch.zeros(2, 3, 3, 1), torch.ones(2, 3, 3, 1), torch.full((2, 3, 3, 1), 0.5)
    torch.testing.assert_close(alpha_sparsity(empty), torch.tensor(0.1))
    torch.testing.assert_close(alpha_sparsity(full), torch.tensor(math.sqrt(1.01)))
    torch.testing.assert_close(alpha_entropy(half), torch.tensor(math.log(2)))
    assert alpha_entropy(empty) < 1e-3 and alpha_entropy(full) < 1e-3


@pytest.mark.parametrize("cls, config_cls", [(DSD, DSDConfig), (SDI, SDIConfig), (SDS, SDSConfig)])
def test_weighted_loss_pulls_each_pixel_with_weight_over_batch(cls, config_cls):
    """Sum-reduced per view: d loss / d alpha = (w_s a / sqrt(a^2 + 0.01) + w_e log((1 - a) / a)) / B."""
    alpha = torch.rand(3, 5, 4, 1, generator=torch.Generator().manual_seed(0)).clamp(0.05, 0.95).requires_grad_()
    guidance = cls(GaussianToyPrior({}), config_cls(alpha_sparsity=0.3, alpha_entropy=0.2), total_steps=10)
    guidance.alpha_regularizer_loss(alpha, step=0).backward()
    a = alpha.detach()
    expected = (0.3 * a / torch.sqrt(a**2 + 0.01) + 0.2 * torch.log((1 - a) / a)) / 3
    torch.testing.assert_close(alpha.grad, expected)


def test_scheduled_weights_and_variants_without_them():
    prior, alpha = GaussianToyPrior({}), torch.rand(2, 4, 4, 1)
    decaying = DSD(prior, DSDConfig(alpha_sparsity=(0, 0.4, 0.0, 10), alpha_entropy=0.0), total_steps=20)
    assert decaying.alpha_regularizer_loss(alpha, step=5) is not None
    torch.testing.assert_close(decaying.alpha_regularizer_loss(alpha, step=5), 0.2 * 16 * alpha_sparsity(alpha))
    assert decaying.alpha_regularizer_loss(alpha, step=10) is None  # both weights 0 from step 10 on
    assert SDS(prior, total_steps=20).alpha_regularizer_loss(alpha, step=0) is None
