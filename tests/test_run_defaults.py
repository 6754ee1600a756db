"""Run settings each representation is tuned with (`RepresentationEntry.run_defaults`): prior, steps and
views per step follow the representation unless chosen, and the Gaussians' densification follows the
steps; a prior passed in must be the config's."""

import pytest
import torch

from sds3d.cli import build_parser, generate_config
from sds3d.config import apply_override
from sds3d.errors import InputError
from sds3d.generate import GenerateConfig, build_representation, generate
from sds3d.guidance.registry import check_prior_is, load_prior
from sds3d.presets import apply_preset
from sds3d.representations.registry import REPRESENTATIONS, run_section

TUNED = ("prior", "steps", "views_per_step")


def settings(config) -> tuple:
    return tuple(getattr(config, name) for name in TUNED)


@pytest.mark.parametrize("name", list(REPRESENTATIONS))
def test_a_config_left_unset_gets_its_representations_settings(name):
    assert settings(GenerateConfig(representation=name)) == tuple(dict(REPRESENTATIONS[name].run_defaults)[k]
                                                                  for k in TUNED)


def test_gaussians_and_the_others_differ_and_an_alias_is_its_representation():
    assert settings(GenerateConfig()) == ("embedded-v2", 250, 3)
    assert settings(GenerateConfig(representation="nerf")) == ("embedded", 600, 4)
    assert settings(GenerateConfig(representation="mesh")) == settings(GenerateConfig(representation="dmtet"))


def test_switching_representation_moves_the_tuned_settings_and_keeps_chosen_ones():
    chosen = apply_override(GenerateConfig(), "steps=450")
    nerf = apply_override(chosen, "representation=nerf")
    assert (nerf.representation, nerf.prior, nerf.steps, nerf.views_per_step) == ("nerf", "embedded", 450, 4)
    back = nerf.with_representation("gaussians")
    assert settings(back) == ("embedded-v2", 450, 3)
    assert settings(apply_override(GenerateConfig(), "steps=null")) == settings(GenerateConfig())


def test_presets_that_set_a_representation_take_its_settings():
    coarse = apply_preset(GenerateConfig(), "magic3d-coarse")
    assert settings(coarse) == ("embedded", 600, 4)
    v1 = apply_preset(GenerateConfig(), "v1")
    assert settings(v1) == ("embedded", 600, 4) and v1.gaussians.densify.refine_every == 100


def test_cli_representation_flag_takes_its_settings_and_other_flags_win():
    parse = build_parser().parse_args
    nerf = generate_config(parse(["generate", "a red mug", "--representation", "nerf"]))
    assert settings(nerf) == ("embedded", 600, 4)
    chosen = generate_config(parse(["generate", "a red mug", "--representation", "nerf", "--prior", "embedded-v2",
                                    "--steps", "20"]))
    assert settings(chosen) == ("embedded-v2", 20, 4)


def test_a_prior_passed_in_must_be_the_one_the_config_names(tmp_path):
    v1 = load_prior("embedded")
    check_prior_is(v1, "embedded-v1")  # two names of one prior
    with pytest.raises(InputError, match="loaded from .*prior, but the config's prior is 'embedded-v2'"):
        check_prior_is(v1, "embedded-v2")
    with pytest.raises(InputError, match="the config's prior is 'embedded-v2'"):
        generate(GenerateConfig(steps=1, out=str(tmp_path / "run")), prior=v1, progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.parametrize("steps, schedule", [(250, (50, 200, 50)), (600, (120, 480, 120)), (100, (20, 80, 20))])
def test_the_gaussians_densification_follows_the_runs_steps(steps, schedule):
    strategy = build_representation(GenerateConfig(steps=steps), torch.Generator().manual_seed(0)).densifier.strategy
    assert (strategy.refine_start_iter, strategy.refine_stop_iter, strategy.refine_every) == schedule


def test_densification_steps_given_are_taken_as_they_are():
    configs = [apply_preset(GenerateConfig(), "v1"), apply_preset(GenerateConfig(), "draft-v2"),
               apply_override(GenerateConfig(steps=600), "gaussians.densify.refine_every=30")]
    for config, schedule in zip(configs, [(100, 800, 100), (50, 250, 50), (120, 480, 30)]):
        densify = run_section(config).densify
        assert (densify.refine_start_iter, densify.refine_stop_iter, densify.refine_every) == schedule


def test_a_densifier_built_outside_a_run_is_scheduled_for_the_gaussians_default_steps():
    """UNSCHEDULED_RUN_STEPS repeats the registry's Gaussians default (the densifier cannot import the
    registry without a cycle); this keeps the two equal."""
    from sds3d.representations.gaussian_densification import UNSCHEDULED_RUN_STEPS

    assert UNSCHEDULED_RUN_STEPS == dict(REPRESENTATIONS["gaussians"].run_defaults)["steps"]
