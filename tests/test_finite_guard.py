"""Non-finite numbers: a step with a NaN loss or gradient is skipped and the learning rates halved once;
the next one stops the run with one line, keeps the last good checkpoint and writes no asset."""

import pytest
import torch
from test_generate import prior, tiny_config

from sds3d.errors import InputError, TrainingDiverged
from sds3d.generate import generate, load_run, save_outputs
from sds3d.representations import Gaussians, GaussiansConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_diverging_run_stops_keeps_the_last_good_checkpoint_and_writes_no_asset(tmp_path):
    config = tiny_config(tmp_path, checkpoint_every=1, preview_every=0)
    config.gaussians.lr_scales = 100.0  # exp(scales) overflows within a few steps
    with pytest.raises(TrainingDiverged) as error:
        generate(config, prior=prior(), progress=False)
    message = str(error.value)
    assert len(message.splitlines()) == 1 and message.startswith("training diverged at step 3")
    assert "again after the learning rates were halved" in message and "(step 1)" in message
    assert not (tmp_path / "asset.ply").exists()
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 1
    _, gaussians = load_run(tmp_path)  # the kept checkpoint is finite and loads
    assert all(torch.isfinite(p).all() for p in gaussians.params.values())


class NaNOnce:
    """The run's guidance, except that step `bad_step`'s loss is NaN."""

    def __init__(self, guidance, bad_step: int):
        self.guidance, self.bad_step = guidance, bad_step

    def __call__(self, output, batch, cameras, step, generator):
        guided = self.guidance(output, batch, cameras, step, generator)
        if step == self.bad_step:
            guided.loss = guided.loss * float("nan")
        return guided

    def __getattr__(self, name):
        return getattr(self.guidance, name)


def test_one_non_finite_step_is_skipped_and_the_learning_rates_halved(tmp_path, capsys):
    from sds3d.generate import make_guidance

    config = tiny_config(tmp_path, preview_every=0)
    toy = prior()
    result = generate(config, prior=toy, guidance=NaNOnce(make_guidance(config, toy), bad_step=6), progress=True)
    assert "step 7: non-finite loss; step skipped, learning rates halved" in capsys.readouterr().err
    assert result.metrics["steps"] == 12 and (tmp_path / "asset.ply").exists()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["backoffs"] == 1
    assert saved["optimizers"]["means"]["param_groups"][0]["lr"] == pytest.approx(config.gaussians.lr_means / 2)


def test_a_non_finite_asset_is_never_written(tmp_path):
    gaussians = Gaussians.random_in_sphere(GaussiansConfig(num_points=10), torch.Generator().manual_seed(0))
    with torch.no_grad():
        gaussians.params["means"][0, 0] = float("inf")
    with pytest.raises(InputError, match="refusing to write a non-finite asset"):
        save_outputs(gaussians, tiny_config(tmp_path), tmp_path / "out")
    assert not (tmp_path / "out").exists()


class NaNPrior(type(prior())):
    """A prior whose noise prediction turns NaN from its `bad_call`-th call on (a broken model)."""

    def __init__(self, bad_call: int):
        super().__init__({"": 0.0}, default_mean=0.6, resolution=16)
        self.calls, self.bad_call = 0, bad_call

    def predict_noise(self, x_t, t, text):
        self.calls += 1
        eps = super().predict_noise(x_t, t, text)
        return eps * float("nan") if self.calls >= self.bad_call else eps


def test_a_prior_that_predicts_nan_stops_the_run_instead_of_training_nothing(tmp_path):
    config = tiny_config(tmp_path, checkpoint_every=1, preview_every=0)
    with pytest.raises(TrainingDiverged, match="training diverged at step"):
        generate(config, prior=NaNPrior(bad_call=3), progress=False)
    assert not (tmp_path / "asset.ply").exists()
