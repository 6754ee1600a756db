"""`sds3d config`, presets, --version and generate --help's defaults."""

import dataclasses

import pytest

from sds3d import __version__
from sds3d.cli import build_parser, generate_config, main
from sds3d.config_docs import field_table
from sds3d.generate import GenerateConfig
from sds3d.presets import apply_preset, preset_names
from sds3d.validation import CHOICES, fields, validate_config


def test_config_lists_every_field_with_type_default_and_description(capsys):
    assert main(["config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    paths = [path for path, _, _ in fields(GenerateConfig())]
    assert [line.split()[0] for line in lines] == paths and len(paths) > 200
    assert all(row[1] and row[2] and row[3] for row in field_table(GenerateConfig()))
    assert main(["config", "camera"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("camera.elevation_range  [float, float]  [-10.0, 45.0]  # ")


def test_presets_are_valid_and_set_the_documented_recipes(capsys):
    from sds3d.guidance.csd import CSDConfig

    assert {"magic3d-coarse", "magic3d-fine", "vsd-particles", "csd-sd-refine"} <= set(preset_names())
    for name in preset_names():
        validate_config(apply_preset(GenerateConfig(), name))
    fine = apply_preset(GenerateConfig(), "magic3d-fine")
    assert (fine.representation, fine.steps) == ("dmtet", 300)
    assert apply_preset(GenerateConfig(), "vsd-particles").vsd.particles == 3
    assert apply_preset(GenerateConfig(), "csd-sd-refine").csd == CSDConfig.sd_refine()
    assert main(["config", "--presets"]) == 0 and "magic3d-fine: " in capsys.readouterr().out
    # the settings every speed-up is measured against (BENCHMARKS.md), whatever the defaults become
    baseline = apply_preset(GenerateConfig(), "baseline")
    densify = baseline.gaussians.densify
    assert (baseline.steps, baseline.prior_precision, baseline.views_per_step, baseline.resolution) == (600, "fp32", 4, 32)
    assert (densify.refine_start_iter, densify.refine_stop_iter, densify.refine_every) == (100, 800, 100)


def test_one_preset_is_shown_field_by_field_against_the_defaults(capsys):
    assert main(["config", "--presets", "magic3d-fine"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("magic3d-fine: ") and len(lines) > 2
    assert '    representation = "dmtet"  (default "gaussians")' in lines
    assert "    steps = 300  (default 600)" in lines
    assert main(["config", "--presets", "nope"]) == 2
    assert "unknown preset 'nope'; choose one of baseline," in capsys.readouterr().err


def test_flags_override_a_preset_and_resume_starts_from_the_run_config(tmp_path):
    args = build_parser().parse_args(["generate", "a red mug", "--preset", "magic3d-fine", "--steps", "50",
                                      "--out", str(tmp_path / "run")])
    config = generate_config(args)
    assert (config.representation, config.steps, config.out) == ("dmtet", 50, str(tmp_path / "run"))
    stored = dataclasses.replace(config, prompt="a blue car", seed=7)
    (tmp_path / "run").mkdir()
    from sds3d.config import save_json

    save_json(stored, tmp_path / "run" / "config.json")
    resumed = generate_config(build_parser().parse_args(["generate", "--out", str(tmp_path / "run"), "--resume"]))
    assert (resumed.prompt, resumed.seed, resumed.representation) == ("a blue car", 7, "dmtet")


def test_version_and_generate_help_show_defaults(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"sds3d {__version__}"
    assert main(["generate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "optimisation steps (default: the representation's: gaussians 250, nerf 600, dmtet 600)" in text
    assert '(default: "gaussians")' in text and '(default: "sds")' in text


@pytest.mark.parametrize("pattern, constant", [
    ("*.timesteps.kind", "sds3d.guidance.schedules:KINDS"), ("*.weighting", "sds3d.guidance.sds:WEIGHTINGS"),
    ("gaussians.backend", "sds3d.cuda.gaussian_rasterizer:BACKENDS"), ("nerf.backend", "sds3d.cuda.hash_grid:BACKENDS")])
def test_choices_match_the_code(pattern, constant):
    from importlib import import_module

    module, name = constant.split(":")
    assert CHOICES[pattern] == getattr(import_module(module), name)
