"""`sds3d fit`: a tiny capture fitted for a few steps gains PSNR on held-out views far above the
start, writes a run folder the other commands read, resumes exactly, and refuses bad input in one
line with nothing written. The real fit (40 views, 8 held out) is marked slow."""

import json
import math
from pathlib import Path

import pytest
import torch

from sds3d.cameras import orbit_cameras
from sds3d.cli import main
from sds3d.errors import InputError
from sds3d.representations import Gaussians
from sds3d.run_folder import ReplacedRunWarning
from sds3d.scene.fit import (FitConfig, fit, focus_point, normalization, photometric_loss, prepare, psnr, ssim_map,
                             transform_cameras)
from sds3d.scene.load import load_asset
from sds3d.world.capture import write_capture


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fit") / "mug"
    write_capture(out, "mug", "red", views=10, resolution=32, holdout=2)
    return out


def tiny(capture, out, **changes) -> FitConfig:
    settings = dict(dataset=str(capture), out=str(out), steps=120, num_gaussians=1500, refine_start=40,
                    refine_every=40, checkpoint_every=50, turntable_frames=4, turntable_resolution=32)
    settings.update(changes)
    return FitConfig(**settings)


def test_a_short_fit_gains_psnr_and_writes_a_run_folder(capture, tmp_path):
    """From random Gaussians in a ball (about 12 dB on the held-out views), 200 steps reach about 19.5 dB."""
    result = fit(tiny(capture, tmp_path / "run", init="sphere", steps=200), progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["init"] == "sphere" and metrics["train_views"] == 8 and metrics["test_views"] == 2
    assert metrics["psnr_test"] > metrics["psnr_test_initial"] + 5, metrics
    assert metrics["psnr_test"] > 17.5 and metrics["psnr_train"] > 19
    for name in ("config.json", "checkpoint.pt", "asset.ply", "turntable.gif", "preview.png", "fit.json",
                 "fit_views.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert json.loads((tmp_path / "run" / "config.json").read_text())["prompt"] == "a red mug"  # the capture's
    # the run folder is a run: load_run / load_asset give back the fitted Gaussians
    asset = load_asset(tmp_path / "run")
    assert isinstance(asset, Gaussians)
    torch.testing.assert_close(asset.means, result.gaussians.means)
    on_disk = Gaussians.load_ply(tmp_path / "run" / "asset.ply")
    torch.testing.assert_close(on_disk.means, result.gaussians.means.detach(), atol=1e-5, rtol=0)
    assert main(["render", str(tmp_path / "run"), "--frames", "2", "--resolution", "16"]) == 0


def test_a_stopped_fit_resumes_to_the_same_gaussians(capture, tmp_path):
    # densifies at step 20, right after the stop, from gradient statistics gathered before it
    config = dict(steps=40, checkpoint_every=15, refine_start=10, refine_every=10)
    whole = fit(tiny(capture, tmp_path / "whole", **config), progress=False)
    calls = []
    stop_at_20 = lambda: calls.append(1) or len(calls) >= 20  # noqa: E731
    fit(tiny(capture, tmp_path / "parts", **config), progress=False, should_stop=stop_at_20)
    assert torch.load(tmp_path / "parts" / "checkpoint.pt", weights_only=True)["step"] == 20
    assert len(whole.gaussians) != 1500  # densification changed the count
    resumed = fit(tiny(capture, tmp_path / "parts", **config), resume=True, progress=False)
    for name, value in whole.gaussians.params.items():
        torch.testing.assert_close(resumed.gaussians.params[name], value, atol=0, rtol=0)
    with pytest.raises(InputError, match="lambda_dssim differs"):
        fit(tiny(capture, tmp_path / "parts", lambda_dssim=0.0, **config), resume=True, progress=False)
    with pytest.warns(ReplacedRunWarning, match="held a finished run"):  # a fresh fit there replaces the run
        fit(tiny(capture, tmp_path / "parts", steps=2), progress=False)


def test_the_prompt_given_to_a_fit_is_the_runs_prompt_for_select_and_edit(capture, tmp_path):
    from sds3d.features.assets import run_prompt

    fit(tiny(capture, tmp_path / "run", steps=2, prompt="  a  crimson cup "), progress=False)
    assert run_prompt(tmp_path / "run") == "a crimson cup"
    with pytest.raises(InputError, match="prompt.*limit"):
        fit(tiny(capture, tmp_path / "long", steps=2, prompt="a" * 400), progress=False)
    assert not (tmp_path / "long").exists()


def test_the_capture_frame_is_moved_to_the_look_at_point(capture):
    cameras = orbit_cameras([0.0, 30.0, 10.0, -5.0], [0.0, 90.0, 200.0, 300.0], 2.0, 40.0, 16)
    shift = torch.tensor([1.0, -2.0, 0.5])
    moved = transform_cameras(cameras, -shift, 1.0)  # world' = world + shift
    torch.testing.assert_close(focus_point(moved), shift, atol=1e-5, rtol=0)
    center, scale = normalization(moved)
    back = transform_cameras(moved, center, scale)
    torch.testing.assert_close(back.viewmats[:, :3, :3], cameras.viewmats[:, :3, :3])
    torch.testing.assert_close(back.centers, cameras.centers * 1.25, atol=1e-5, rtol=0)  # radius 2 -> 2.5
    train, test, frame = prepare(FitConfig(dataset=str(capture)))
    assert frame["scale"] == pytest.approx(1.0, abs=1e-5) and max(map(abs, frame["center"])) < 1e-5
    assert len(train) == 8 and len(test) == 2


def test_the_loss_is_l1_and_dssim_over_the_mask():
    a = torch.full((1, 3, 24, 24), 0.2)
    b = torch.full((1, 3, 24, 24), 0.6)
    c1 = 0.01 ** 2
    expected_ssim = (2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1)  # constant images: the luminance term
    assert float(ssim_map(a, b)[0, 0, 12, 12]) == pytest.approx(expected_ssim, rel=1e-4)
    assert float(ssim_map(b, b)[0, :, 6:18, 6:18].min()) == pytest.approx(1.0, abs=1e-4)
    assert float(photometric_loss(a, b, None, 0.0)) == pytest.approx(0.4, rel=1e-5)
    mask = torch.zeros(1, 1, 24, 24, dtype=torch.bool)
    mask[..., :6] = True  # SSIM's 11x11 window from these columns stays left of column 12
    c = b.clone()
    c[..., 12:] = 0.9  # differences outside the mask do not count
    assert float(photometric_loss(c, b, mask, 0.2)) == pytest.approx(0.0, abs=1e-6)
    assert float(photometric_loss(c, b, ~mask, 0.0)) == pytest.approx(0.3 * 12 / 18, rel=1e-5)
    assert float(psnr(c, b, mask)[0]) == pytest.approx(100.0)  # the 1e-10 floor: identical where it counts
    assert float(psnr(c, b)[0]) == pytest.approx(-10 * math.log10(0.3 ** 2 / 2), rel=1e-5)


def test_bad_input_is_one_line_and_writes_nothing(capture, tmp_path, capsys):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "transforms.json").write_text(json.dumps({"frames": [{"file_path": "x.png"}]}))
    cases = [
        ([str(tmp_path / "broken"), "--out", str(tmp_path / "o1")], "file_path"),
        ([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")], "no such file"),
        ([str(capture), "--out", str(tmp_path / "o3"), "--steps", "0"], "steps"),
        ([str(capture), "--out", str(tmp_path / "o4"), "--num-gaussians", "0"], "num_gaussians"),
        ([str(capture), "--out", str(tmp_path / "o5"), "--dssim", "1.5"], "lambda_dssim"),
    ]
    for argv, field in cases:
        assert main(["fit", *argv]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("sds3d: error:") and "\n" not in error and field in error, error
        assert not Path(argv[argv.index("--out") + 1]).exists()


@pytest.mark.slow
def test_the_red_mug_fits_to_25_db_on_held_out_views(tmp_path):
    """40 training views, 8 held out, 128 px: the default fit reaches 25 dB PSNR on the held-out views."""
    write_capture(tmp_path / "mug48", "mug", "red", views=48, resolution=128, holdout=8)
    result = fit(FitConfig(dataset=str(tmp_path / "mug48"), out=str(tmp_path / "run")), progress=False)
    assert result.metrics["train_views"] == 40 and result.metrics["test_views"] == 8
    assert result.metrics["psnr_test"] >= 25, result.metrics
