import json
import subprocess
import sys

import pytest

from sds3d.cli import main


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


def test_eval_scores_a_run_and_rejects_non_runs(tmp_path, capsys):
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
