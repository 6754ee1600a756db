"""VSD particles (ProlificDreamer's): n representations optimised together, one shared LoRA, in the generation loop."""

import json

import pytest
import torch

from sds3d.cli import main
from sds3d.config import load_json
from sds3d.generate import GenerateConfig, generate, load_run, particle_count
from sds3d.guidance.base import images_from_render
from sds3d.guidance.priors.stable_diffusion import StableDiffusionPrior
from sds3d.guidance.vsd import VSD, VSDConfig
from sds3d.representations import Gaussians, GaussiansConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prior(tiny_sd_folder):
    return StableDiffusionPrior.from_pretrained(tiny_sd_folder)


def config(out, particles=2, **changes) -> GenerateConfig:
    # separate_unet: every run's LoRA lives on its own UNet copy, so runs sharing the prior stay independent
    config = GenerateConfig(prompt="a red mug", guidance="vsd", steps=6, seed=5, views_per_step=2, resolution=16,
                            out=str(out), preview_every=3, checkpoint_every=3, turntable_frames=4,
                            turntable_resolution=16, gaussians=GaussiansConfig(num_points=120),
                            vsd=VSDConfig(particles=particles, separate_unet=True))
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def params(representation):
    return {name: value.detach().clone() for name, value in representation.params.items()}


def assert_same_particles(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for name, value in params(x).items():
            assert torch.equal(value, params(y)[name]), name


def test_each_step_trains_the_shared_lora_on_every_particle(tmp_path, prior, monkeypatch):
    renders, lora_batches, guidances = [], [], set()
    render, lora_step = Gaussians.render, VSD.lora_step

    def recording_render(self, cameras, background=None):
        output = render(self, cameras, background)
        renders.append((id(self), output.rgb.detach().clone()))
        return output

    def recording_lora_step(self, y, text, camera, generator=None):
        guidances.add(id(self))
        lora_batches.append(y.detach().clone())
        return lora_step(self, y, text, camera, generator)

    monkeypatch.setattr(Gaussians, "render", recording_render)
    monkeypatch.setattr(VSD, "lora_step", recording_lora_step)
    result = generate(config(tmp_path, preview_every=0), prior=prior, progress=False)
    monkeypatch.undo()

    ids = [id(particle) for particle in result.particles]
    assert len(set(ids)) == 2 and result.representation is result.particles[0]
    assert len(guidances) == 1  # one VSD, one LoRA
    training_renders = renders[: len(lora_batches)]  # the turntables are rendered after training
    assert [owner for owner, _ in training_renders] == ids * 6  # every step visits particle 0, then 1
    for (_, rgb), y in zip(training_renders, lora_batches):  # the LoRA's batch is that particle's render
        torch.testing.assert_close(y, prior.encode_images(images_from_render(rgb)))
    first, second = (params(particle) for particle in result.particles)
    assert not torch.equal(first["means"], second["means"])  # different initialisations
    assert result.metrics["particles"] == 2 and result.metrics["particle_assets"] == ["asset.ply", "particle_1/asset.ply"]


def test_crash_and_resume_equals_uninterrupted_for_every_particle_and_the_lora(tmp_path, prior):
    # 4 steps, checkpoints after 2 and 4, a crash in step 4 (index 3): as before with 6 steps, the step
    # after the checkpoint is lost and done again, and the resumed run takes more than one step
    short = {"steps": 4, "checkpoint_every": 2}
    reference = generate(config(tmp_path / "ref", **short), prior=prior, progress=False)
    reference_lora = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)["guidance"]

    def crash(step, logs, output):
        if step == 3:  # after the checkpoint at 2 steps
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(config(tmp_path / "run", **short), prior=prior, progress=False, callback=crash)
    partial = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert partial["step"] == 2 and len(partial["particles"]) == 1
    with pytest.raises(ValueError, match=r"vsd.particles \(2 -> 3\)"):
        generate(config(tmp_path / "run", particles=3, **short), prior=prior, progress=False, resume=True)
    assert load_json(GenerateConfig, tmp_path / "run" / "config.json").vsd.particles == 2  # left as it was
    resumed = generate(config(tmp_path / "run", **short), prior=prior, progress=False, resume=True)
    assert_same_particles(reference.particles, resumed.particles)
    resumed_lora = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["guidance"]
    for name, value in reference_lora.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, resumed_lora[name]), name


@pytest.fixture
def three_reference_shapes(monkeypatch):
    """`eval` ranks the asset's shape among the reference shapes of cube, mug and chair instead of all
    28 kinds: the same scoring code, 1/9 of its yaw-searched Chamfer distances (which were 2.5 s of
    the eval's 3.3 s). Here the particle's files are checked, not the ranking
    (tests/test_shape_accuracy.py)."""
    from sds3d import shape_accuracy

    shapes = shape_accuracy.reference_shapes()
    subset = {kind: shapes[kind] for kind in ("cube", "mug", "chair")}
    monkeypatch.setattr(shape_accuracy, "reference_shapes", lambda: subset)


def test_outputs_and_loading_each_particle(tmp_path, prior, capsys, three_reference_shapes):
    result = generate(config(tmp_path, particles=3, steps=2, preview_every=2), prior=prior, progress=False)
    for name in ("asset.ply", "particles.png", "particle_1/asset.ply", "particle_2/turntable.gif",
                 "particle_2/preview.png", "previews/step_00002.png"):
        assert (tmp_path / name).is_file(), name
    from PIL import Image

    assert Image.open(tmp_path / "particles.png").size == (4 * 16, 3 * 16)  # 4 turntable frames x 3 particles
    assert Image.open(tmp_path / "previews" / "step_00002.png").size == (4 * 64, 3 * 64)
    for index, particle in enumerate(result.particles):
        _, loaded = load_run(tmp_path, particle=index)
        assert_same_particles([particle], [loaded])
    with pytest.raises(ValueError, match="no particle 3"):
        load_run(tmp_path, particle=3)
    capsys.readouterr()
    assert main(["export", str(tmp_path), "--particle", "2", "--out", str(tmp_path / "p2.ply")]) == 0
    assert (tmp_path / "p2.ply").read_bytes() == (tmp_path / "particle_2" / "asset.ply").read_bytes()
    assert main(["eval", str(tmp_path), "--particle", "1"]) == 0
    assert (tmp_path / "particle_1" / "eval.json").is_file() and not (tmp_path / "eval.json").exists()
    assert main(["export", str(tmp_path), "--particle", "5", "--out", str(tmp_path / "p5.ply")]) == 2
    assert "no particle 5" in capsys.readouterr().err
    assert json.loads((tmp_path / "metrics.json").read_text())["particles"] == 3


def test_particle_count_and_its_errors(tmp_path, capsys):
    assert particle_count(config(tmp_path, particles=3)) == 3
    assert particle_count(config(tmp_path, particles=3, guidance="sds")) == 1  # only VSD has particles
    with pytest.raises(ValueError, match="at least 1"):
        particle_count(config(tmp_path, particles=0))
    assert main(["generate", "a red mug", "--particles", "2", "--out", str(tmp_path)]) == 2
    assert "2 particles need the vsd guidance" in capsys.readouterr().err
    assert main(["generate", "a red mug", "--guidance", "vsd", "--particles", "0", "--out", str(tmp_path)]) == 2


def test_cost_per_step_counts_every_particle(prior):
    one = VSD(prior, VSDConfig(separate_unet=True))
    three = VSD(prior, VSDConfig(separate_unet=True, particles=3))
    assert three.unet_evals_per_step() == 3 * one.unet_evals_per_step() == 3 * 4
    with pytest.raises(ValueError, match="at least one particle"):
        VSD(prior, VSDConfig(particles=0))
