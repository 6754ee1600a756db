import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sds3d.cli import main


@pytest.fixture
def three_reference_shapes(monkeypatch):
    """`eval` ranks the asset's shape among the reference shapes of cube, mug and chair instead of all
    28 kinds: the same scoring code, 1/9 of its yaw-searched Chamfer distances (which were 2.5 s of
    each eval's 3.3 s). These tests check the command, not the ranking (tests/test_shape_accuracy.py)."""
    from sds3d import shape_accuracy

    shapes = shape_accuracy.reference_shapes()
    subset = {kind: shapes[kind] for kind in ("cube", "mug", "chair")}
    monkeypatch.setattr(shape_accuracy, "reference_shapes", lambda: subset)


def test_demo_writes_asset_and_pictures(tmp_path, capsys):
    assert main(["demo", "--kind", "cube", "--color", "blue", "--points", "2000", "--frames", "4",
                 "--resolution", "32", "--out", str(tmp_path)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["gaussians"] == 2000
    for name in ("turntable.gif", "preview.png", "asset.ply", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("args,message", [
    (["--kind", "dragon"], "unknown kind 'dragon'"),
    (["--color", "mauve"], "unknown colour 'mauve'"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, args, message):
    assert main(["demo", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("args,hint", [
    (["evaluate", "run"], "did you mean 'eval'?"),
    (["genrate", "a red mug"], "did you mean 'generate'?"),
    (["render", "run", "--format", "mp5"], "did you mean 'mp4'?"),
    (["xyzzy"], None),
])
def test_a_mistyped_choice_names_the_nearest_one(capsys, args, hint):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid choice" in err
    assert (hint in err) if hint else "did you mean" not in err


def test_plain_sds3d_prints_the_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: sds3d") and "generate" in out and "eval" in out


def test_unwritable_output_dir(capsys):
    assert main(["demo", "--out", "/proc/sds3d"]) == 2  # not creatable, even for root
    assert "cannot write to output directory" in capsys.readouterr().err


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "sds3d", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout


def test_sample_writes_a_grid_from_the_embedded_prior(tmp_path):
    out = tmp_path / "grid.png"
    assert main(["sample", "a red cube", "--n", "2", "--steps", "2", "--zoom", "1", "--out", str(out)]) == 0
    from PIL import Image

    assert Image.open(out).size == (64, 32)  # 2 samples of 32x32 side by side


def test_sample_from_the_camera_prior_and_a_missing_prior(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", "a red mug, back view", "--prior", "embedded-v2", "--n", "2", "--steps", "2",
                 "--zoom", "1", "--out", str(out)]) == 0
    assert out.exists()
    assert main(["sample", "a red mug", "--prior", str(tmp_path / "nothing"), "--out", str(out)]) != 0
    assert "no embedded prior under" in capsys.readouterr().err


def test_eval_scores_a_run_and_rejects_non_runs(tmp_path, capsys, three_reference_shapes):
    from toy_priors import GaussianToyPrior

    from sds3d.generate import GenerateConfig, generate
    from sds3d.representations import GaussiansConfig

    config = GenerateConfig(prompt="a red cube", steps=2, resolution=16, views_per_step=1, out=str(tmp_path),
                            turntable_frames=2, turntable_resolution=16, gaussians=GaussiansConfig(num_points=100))
    generate(config, prior=GaussianToyPrior({}, resolution=16), progress=False)
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["kind"] == "cube" and 0 <= scores["kind_acc"] <= 1 and scores["chamfer"] > 0
    assert (tmp_path / "eval.json").exists()
    assert main(["eval", str(tmp_path / "missing")]) == 2


def toy_run(out, prompt: str):
    """A finished 2-step Gaussians run of `prompt` (toy prior), for the commands that read runs."""
    from toy_priors import GaussianToyPrior

    from sds3d.generate import GenerateConfig, generate
    from sds3d.representations import GaussiansConfig

    config = GenerateConfig(prompt=prompt, steps=2, resolution=16, views_per_step=1, out=str(out),
                            turntable_frames=2, turntable_resolution=16, gaussians=GaussiansConfig(num_points=100))
    generate(config, prior=GaussianToyPrior({}, resolution=16), progress=False)
    return out


def test_eval_says_why_a_prompt_cannot_be_scored(tmp_path, capsys, three_reference_shapes):
    toy_run(tmp_path / "chair", "a wooden chair")
    toy_run(tmp_path / "cubes", "two red cubes")
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "chair")]) == 0
    captured = capsys.readouterr()
    assert "'a wooden chair' names no micro-world colour; nothing to score" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1]) == {}
    assert main(["eval", str(tmp_path / "cubes")]) == 0  # a plural names the kind
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["kind"] == "cube"


BAD_NUMBERS = {
    ("demo", "--frames", "0"): "argument --frames: must be between 1 and 1000, got 0",
    ("demo", "--resolution", "0"): "argument --resolution: must be between 8 and 2048, got 0",
    ("demo", "--points", "-5"): "argument --points: must be between 1 and 10000000, got -5",
    ("demo", "--seed", str(2**64)): "argument --seed: must be between 0 and 18446744073709551615",
    ("render", "RUN", "--frames", "-2"): "argument --frames: must be between 1 and 1000, got -2",
    ("render", "RUN", "--resolution", "0"): "argument --resolution: must be between 8 and 2048",
    ("render", "RUN", "--elevation", "nan"): "argument --elevation: must be between -90 and 90, got nan",
    ("export", "RUN", "--out", "a.glb", "--resolution", "0"): "argument --resolution: must be between 2 and 1024",
    ("export", "RUN", "--out", "a.glb", "--texture-size", "0"): "argument --texture-size: must be between 16",
    ("export", "RUN", "--out", "a.glb", "--max-faces", "-1"): "argument --max-faces: must be at least 4, got -1",
    ("sample", "a red mug", "--n", "0"): "argument --n: must be between 1 and 1024, got 0",
    ("sample", "a red mug", "--steps", "0"): "argument --steps: must be at least 1, got 0",
    ("sample", "a red mug", "--zoom", "0"): "argument --zoom: must be between 1 and 64, got 0",
    ("sample", "a red mug", "--guidance-scale", "nan"): "argument --guidance-scale: must be at least 0, got nan",
    ("sample", "a red mug", "--seed", "1e3"): "argument --seed: invalid int value: '1e3'",
}


@pytest.mark.parametrize("args", list(BAD_NUMBERS), ids=[" ".join(a) for a in BAD_NUMBERS])
def test_numbers_out_of_range_are_one_usage_line(args, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*args, "--out", "out"] if args[0] in ("demo", "render") else list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert BAD_NUMBERS[args] in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_flag_ranges_are_the_configs():
    from sds3d.cli import FRAMES, IMAGE_SIZE, SEED
    from sds3d.validation import RANGES

    for parse, field in ((FRAMES, "turntable_frames"), (IMAGE_SIZE, "turntable_resolution"), (SEED, "seed")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"must be {RANGES[field][1]}"):
            parse("-1")


def test_render_checks_its_output_before_rendering(tmp_path, capsys, monkeypatch):
    run = toy_run(tmp_path / "run", "a red cube")
    monkeypatch.setattr("sds3d.turntable.render_turntable", lambda *args, **kwargs: pytest.fail("rendered"))
    for out, message in ((tmp_path / "t.avi", "turntables are written as gif or mp4, not 'avi'"),
                         ("/proc/sds3d/t.gif", "cannot write to output directory /proc/sds3d")):
        capsys.readouterr()
        assert main(["render", str(run), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["a red mug", "--out", "OUT/samples"], "--out OUT/samples: not an image file name"),
    (["a red mug " * 40, "--out", "OUT/s.png"], "the prompt is 399 characters long; the limit is 300"),
    (["a red mug", "--steps", "2000", "--out", "OUT/s.png"], "--steps must be at most 1000"),
])
def test_sample_refuses_bad_input_before_sampling(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sds3d.guidance.priors.embedded_prior.sample", lambda *a, **k: pytest.fail("sampled"))
    args = [arg.replace("OUT", str(tmp_path / "out")) for arg in args]
    assert main(["sample", *args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message.replace("OUT", str(tmp_path / "out")) in err and len(err.splitlines()) == 1


def test_a_reader_that_stops_early_gets_no_traceback(monkeypatch, capsys):
    """`sds3d config | head -1`: the pipe closes before the listing is written."""
    read, write = os.pipe()
    os.close(read)
    with open(write, "w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert main(["config"]) == 141
        assert os.stat(stdout.fileno()).st_rdev == os.stat(os.devnull).st_rdev  # the rest goes nowhere, quietly
    assert capsys.readouterr().err == ""


def test_batch_refuses_zero_threads_per_run(tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("a red mug\n")
    assert main(["batch", str(tmp_path / "prompts.txt"), "--out", str(tmp_path / "b"), "--threads-per-run", "0",
                 "--set", "steps=1", "--quiet"]) == 2
    assert "--threads-per-run must be at least 1, got 1 and 0" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_render_eval_and_export_take_asset_files(tmp_path, capsys, three_reference_shapes):
    """A 3DGS .ply or a .glb mesh in place of a run: render and eval write beside the file (eval needs
    the prompt), export converts it; a particle other than 0 is refused."""
    from sds3d.representations.convert import mesh_to_gaussians
    from sds3d.representations.mesh import Mesh
    from sds3d.world import make_object

    mesh = Mesh.from_trimesh(make_object("cube", "blue").mesh)
    ply, glb = tmp_path / "cube.ply", tmp_path / "cube.glb"
    mesh_to_gaussians(mesh, num_points=2000).save_ply(ply)
    mesh.save(glb)
    assert main(["render", str(ply), "--frames", "3", "--resolution", "32"]) == 0
    assert (tmp_path / "cube_turntable_32.gif").stat().st_size > 0
    assert main(["render", str(glb), "--frames", "3", "--resolution", "32", "--out", str(tmp_path / "m.gif")]) == 0
    assert main(["eval", str(ply), "--prompt", "a blue cube"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["kind"] == "cube" and scores["kind_acc"] > 0.5 and scores["color_acc"] > 0.5
    assert json.loads((tmp_path / "cube_eval.json").read_text()) == scores
    assert main(["export", str(glb), "--out", str(tmp_path / "again.obj"), "--texture-size", "32", "--quiet"]) == 0
    assert (tmp_path / "again.obj").stat().st_size > 0
    capsys.readouterr()
    for args, message in ((["eval", str(ply)], "give the prompt"),
                          (["render", str(ply), "--particle", "1"], "not a run with particles"),
                          (["export", str(glb), "--out", str(tmp_path / "x.ply")], "not 3D Gaussians")):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


def test_a_stopped_run_is_read_from_its_last_checkpoint_with_a_note(tmp_path, capsys):
    """render / eval / export of a run that stopped before its last step say so in one line."""
    run = toy_run(tmp_path / "cube", "a red cube")
    assert main(["render", str(run), "--frames", "2", "--resolution", "16"]) == 0
    assert "note" not in capsys.readouterr().err  # a finished run: nothing to say
    config = json.loads((run / "config.json").read_text())
    config["steps"] = 5  # as if it had stopped after 2 of 5 steps
    (run / "config.json").write_text(json.dumps(config))
    assert main(["render", str(run), "--frames", "2", "--resolution", "16"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sds3d: note: {run} stopped at step 2 of 5: its last checkpoint is used "
                   f"(`sds3d generate ... --out {run} --resume` finishes it)"]


def test_ctrl_c_during_generate_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import importlib

    def interrupted(config, **kwargs):  # a run stopped by Ctrl-C after its first checkpoint
        Path(config.out).mkdir(parents=True)
        (Path(config.out) / "checkpoint.pt").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module("sds3d.generate"), "generate", interrupted)
    run = tmp_path / "mug"
    assert main(["generate", "a red mug", "--out", str(run), "--quiet"]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sds3d: interrupted;") and f"sds3d generate --out {run} --resume" in err
