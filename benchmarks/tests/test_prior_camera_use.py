"""benchmarks/prior_camera_use.py: the loss rise with a turned camera measures the camera's use."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from prior_camera_use import camera_rise  # noqa: E402


def test_a_prior_that_ignores_its_camera_rises_by_nothing_and_one_that_reads_it_does():
    """A zero camera token (the fine-tuning start) predicts the same at every camera: equal losses. A
    trained token does not; each loss is the epsilon MSE at that timestep's noisy image."""
    from sds3d.cameras import camera_features
    from sds3d.world.train_prior import build_scheduler, build_unet

    torch.manual_seed(0)
    unet = build_unet((16, 32), head_dim=16, norm_num_groups=8, camera_dim=6).eval()
    abar = build_scheduler().alphas_cumprod.float()
    x0, noise, hidden = torch.rand(3, 3, 32, 32) * 2 - 1, torch.randn(3, 3, 32, 32), torch.randn(3, 32, 384)
    true = camera_features([10.0, 20.0, 30.0], [0.0, 90.0, -45.0], [2.5] * 3, [40.0] * 3)
    turned = camera_features([10.0, 20.0, 30.0], [180.0, -90.0, 135.0], [2.5] * 3, [40.0] * 3)
    ignored = camera_rise(unet, abar, x0, hidden, true, turned, noise, timesteps=(300, 700))
    assert all(a.mean() == b.mean() for a, b in ignored.values())
    torch.nn.init.normal_(unet.camera_token.proj.weight, std=0.5)
    read = camera_rise(unet, abar, x0, hidden, true, turned, noise, timesteps=(300, 700))
    assert all(abs(a.mean() - b.mean()) > 1e-6 for a, b in read.values())
    x_t = abar[300].sqrt() * x0 + (1 - abar[300]).sqrt() * noise
    with torch.no_grad():
        eps = unet(x_t, torch.full((3,), 300), encoder_hidden_states=hidden, camera=true).sample
    torch.testing.assert_close(float((eps - noise).pow(2).mean()), float(read[300][0].mean()))
