"""`--prior` reads the kind of prior from the folder: Stable Diffusion, DeepFloyd IF or an embedded export."""

import json
import shutil

import pytest
import torch

from sds3d.assets import ASSETS_DIR
from sds3d.cli import main
from sds3d.guidance.priors.deepfloyd_if import DeepFloydIFPrior
from sds3d.guidance.priors.embedded_prior import EmbeddedPrior
from sds3d.guidance.priors.prior_type import prior_type
from sds3d.guidance.registry import load_prior
from sds3d.guidance.priors.stable_diffusion import StableDiffusionPrior

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pipeline_folders_by_their_model_index(tiny_sd_folder, tiny_if_folder):
    assert json.loads((tiny_if_folder / "model_index.json").read_text())["_class_name"] == "IFPipeline"
    assert prior_type(str(tiny_sd_folder)) == "sd" and prior_type(str(tiny_if_folder)) == "if"
    assert prior_type("embedded") == "embedded" and prior_type(str(ASSETS_DIR / "prior")) == "embedded"


def test_folders_without_model_index_by_their_components(tiny_sd_folder, tiny_if_folder, tmp_path):
    for name, folder in (("sd", tiny_sd_folder), ("if", tiny_if_folder)):
        copy = shutil.copytree(folder, tmp_path / name)
        (copy / "model_index.json").unlink()
        assert prior_type(str(copy)) == name


def test_unknown_and_missing_folders_are_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot tell which prior"):
        prior_type(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prior_type(str(tmp_path / "missing"))


def test_hub_ids_not_in_the_cache_by_their_name():
    assert prior_type("DeepFloyd/IF-I-XL-v1.0") == "if"
    assert prior_type("stabilityai/stable-diffusion-2-1-base") == "sd"


def test_load_prior_builds_the_detected_prior(tiny_sd_folder, tiny_if_folder):
    assert isinstance(load_prior(str(tiny_if_folder)), DeepFloydIFPrior)
    assert isinstance(load_prior(str(tiny_sd_folder)), StableDiffusionPrior)
    assert isinstance(load_prior(str(ASSETS_DIR / "prior")), EmbeddedPrior)


def test_cli_generates_with_a_deepfloyd_if_folder(tiny_if_folder, tmp_path, capsys):
    assert main(["generate", "a red cube", "--prior", str(tiny_if_folder), "--steps", "1", "--quiet", "--out",
                 str(tmp_path), "--set", "resolution=16", "--set", "views_per_step=1", "--set",
                 "turntable_frames=2", "--set", "turntable_resolution=16", "--set", "gaussians.num_points=100"]) == 0
    assert (tmp_path / "asset.ply").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["prior"] == str(tiny_if_folder)


def test_the_web_ui_offers_a_deepfloyd_if_folder(tiny_if_folder, tmp_path):
    from sds3d.app.runner import Runner, prior_choices

    runner = Runner(tmp_path, prior_choices([str(tiny_if_folder)]))
    assert list(runner.priors) == ["embedded", "embedded-v2", "embedded-v3", "pipeline"]
    assert isinstance(runner.models["pipeline"], DeepFloydIFPrior)


def test_the_shipped_priors_by_name(capsys, monkeypatch):
    """"embedded" and "embedded-v1" are the text-only prior, "embedded-v2" and "embedded-v3" (v2 trained further)
    the camera-conditioned ones."""
    from sds3d.guidance.priors import embedded_prior

    monkeypatch.setattr(embedded_prior, "_TOLD_TEXT_ONLY", set())  # said once per process
    assert prior_type("embedded-v1") == prior_type("embedded-v2") == "embedded"
    v1, v2 = load_prior("embedded-v1"), load_prior("embedded-v2")
    assert not v1.camera_conditioned and "treated as v1" in capsys.readouterr().err
    assert v2.camera_conditioned and v2.null_camera
    v3 = load_prior("embedded-v3")
    assert prior_type("embedded-v3") == "embedded" and v3.camera_conditioned and v3.null_camera
    assert not torch.equal(next(v3.unet.parameters()), next(v2.unet.parameters()))  # its own weights
    assert not load_prior("embedded").camera_conditioned
