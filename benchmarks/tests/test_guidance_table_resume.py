"""The guidance table resumes an interrupted run (benchmarks/guidance_table.py `resume_point`) only from
a checkpoint written with the same result settings and only while the run is unfinished."""

import dataclasses
import sys
from pathlib import Path

from toy_priors import GaussianToyPrior

from sds3d.generate import GenerateConfig, generate
from sds3d.representations import GaussiansConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from guidance_table import resume_point  # noqa: E402


def tiny_config(out) -> GenerateConfig:
    return GenerateConfig(prompt="a red mug", steps=8, seed=3, views_per_step=1, resolution=16, out=str(out),
                          preview_every=0, checkpoint_every=0, turntable_frames=2, turntable_resolution=16,
                          gaussians=GaussiansConfig(num_points=100))


def test_resume_point_of_a_stopped_run_and_only_for_its_settings(tmp_path):
    config = tiny_config(tmp_path / "run")
    prior = GaussianToyPrior({"": 0.0}, default_mean=0.6, resolution=16)
    steps = []
    generate(config, prior=prior, progress=False, callback=lambda step, logs, output: steps.append(step),
             should_stop=lambda: len(steps) >= 3)  # stopped after 3 of 8 steps, with a checkpoint

    step, seconds = resume_point(config)
    assert step == 3 and seconds > 0
    bookkeeping = dataclasses.replace(config, checkpoint_every=50, turntable_frames=36, turntable_format="mp4")
    assert resume_point(bookkeeping)[0] == 3
    other_variant = dataclasses.replace(config, dsd=dataclasses.replace(config.dsd, alpha_sparsity=0.5))
    assert resume_point(other_variant)[0] == 3  # a section the run does not use
    assert resume_point(dataclasses.replace(config, seed=4)) == (0, 0.0)
    assert resume_point(dataclasses.replace(config, sds=dataclasses.replace(config.sds, guidance_scale=3.0))) == (0, 0.0)
    assert resume_point(tiny_config(tmp_path / "elsewhere")) == (0, 0.0)

    generate(config, prior=prior, progress=False, resume=True)
    assert resume_point(config) == (0, 0.0)  # finished
