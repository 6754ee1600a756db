"""Bad input, in the CLI, the library and the web UI: one line, exit code 2 (the library raises
InputError with that line), and the output folder is either untouched or absent."""

import hashlib
import json
import shutil
from functools import reduce
from pathlib import Path

import numpy as np
import pytest
import torch
from test_generate import prior as toy_prior
from test_generate import tiny_config

from sds3d.cli import main
from sds3d.config import apply_override
from sds3d.errors import InputError
from sds3d.generate import generate

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 4-step Gaussians run (library, toy prior)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    generate(tiny_config(out, steps=4, checkpoint_every=2, preview_every=0), prior=toy_prior(), progress=False)
    return out


def contents(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "error: " in err and "Traceback" not in err, err
    return err


# --set assignments a run must refuse before it starts (the CLI also gets them as --set)
BAD_SETS = {
    "steps=abc": "steps must be an integer",
    "steps=0": "steps must be between 1",
    "seed=1.5": "seed must be an integer",
    "seed=18446744073709551616": "seed must be between 0 and 18446744073709551615",
    "seed=-1": "seed must be between 0",
    "views_per_step=0": "views_per_step must be between 1",
    "resolution=100000": "resolution must be between",
    "camera.elevation_range=[0]": "camera.elevation_range must be a list [float, float]",
    "camera.fovy_range=[50, 10]": "camera.fovy_range must be [low, high] with low <= high",
    "camera.radius_range=[-1, 2]": "camera.radius_range must be above 0",
    "gaussians.num_points=0": "gaussians.num_points must be between 1",
    "gaussians.lr_means=1e39": "gaussians.lr_means must be between 0 and 1000000.0",
    "sds.guidance_scale=-1": "sds.guidance_scale must be at least 0",
    "sds.guidance_scale=NaN": "sds.guidance_scale must be a finite number",
    "sds.grad_clip=Infinity": "sds.grad_clip must be a finite number",
    "cds.guidance_scale=[0, -1, 2, 3]": "cds.guidance_scale must be at least 0",
    "sds.guidance_scale=[0, 1, 2]": "schedule [start_step, start_value, end_value, end_step]",
    "sds.timesteps.kind=warp": "unknown sds.timesteps.kind 'warp'",
    "sds.timesteps.max_step_percent=1.5": "sds.timesteps.max_step_percent must be between 0 and 1",
    "view_dependent=maybe": "view_dependent must be true or false",
    "nerf.shading_probabilities=[0, 0, 0]": "nerf.shading_probabilities must not all be 0",
    "representation=voxels": "unknown representation 'voxels'",
    "guidance=magic": "unknown guidance 'magic'",
    "background=black": "unknown background 'black'",
    'device="tpu"': "unknown device 'tpu'",
    "prior=some-unknown-name": "unknown prior 'some-unknown-name'",
    "prompt=\u0000\u0000\u0000": "prompt contains the control character U+0000",
    "prompt=   ": "the prompt is empty",
    "negative_prompt=" + "x" * 98000: "negative_prompt is 98000 characters long; the limit is 300",
    "init_from=/nonexistent/run": "init_from /nonexistent/run is not a run directory",
    "vsd.particles=0": "vsd.particles must be between 1 and 64",
    "unknown.key=1": "unknown config key 'unknown.key'",
    "sds.scale=3": "unknown config key 'sds.scale'",
    "steps.x=1": "steps is not a section",
    "steps": "must look like key.path=value",
    'sds={"guidance_scale": "x"}': "sds.guidance_scale must be a finite number",
}


@pytest.mark.parametrize("assignment", list(BAD_SETS), ids=[a[:40] for a in BAD_SETS])
def test_bad_set_in_the_cli(assignment, tmp_path, capsys):
    out = tmp_path / "new"
    err = one_line_error(capsys, main(["generate", "a red mug", "--out", str(out), "--set", assignment]))
    assert BAD_SETS[assignment] in err
    assert not out.exists()


@pytest.mark.parametrize("assignment", list(BAD_SETS), ids=[a[:40] for a in BAD_SETS])
def test_bad_config_in_the_library(assignment, tmp_path):
    out = tmp_path / "new"
    with pytest.raises(InputError) as error:
        generate(reduce(apply_override, [assignment], tiny_config(out)), prior=toy_prior(), progress=False)
    assert BAD_SETS[assignment] in str(error.value) and len(str(error.value).splitlines()) == 1
    assert not out.exists()


BAD_FLAGS = {
    ("--steps", "abc"): "argument --steps: invalid int value",
    ("--steps", "0"): "steps must be between 1",
    ("--seed", str(2**64)): "seed must be between 0",
    ("--device", "tpu"): "unknown device 'tpu'",
    ("--prior", "some-unknown-name"): "unknown prior 'some-unknown-name'",
    ("--representation", "voxels"): "unknown representation 'voxels'",
    ("--guidance", "magic"): "unknown guidance 'magic'",
    ("--negative-prompt", "y" * 98000): "negative_prompt is 98000 characters long",
    ("--init-from", "/nonexistent/run"): "is not a run directory",
    ("--particles", "2"): "2 particles need the vsd guidance",
    ("--preset", "nope"): "unknown preset 'nope'",
    ("--config", "/nonexistent/config.json"): "no such config file",
    ("--bogus",): "unrecognized arguments: --bogus",
}


@pytest.mark.parametrize("flags", list(BAD_FLAGS), ids=[" ".join(f)[:40] for f in BAD_FLAGS])
def test_bad_flag(flags, tmp_path, capsys):
    out = tmp_path / "new"
    err = one_line_error(capsys, main(["generate", "a red mug", "--out", str(out), *flags]))
    assert BAD_FLAGS[flags] in err and not out.exists()


@pytest.mark.parametrize("prompt", ["", "   ", "\u0000\u0000"])
def test_bad_prompt(prompt, tmp_path, capsys):
    out = tmp_path / "new"
    err = one_line_error(capsys, main(["generate", prompt, "--out", str(out)]))
    assert "prompt" in err and not out.exists()


@pytest.mark.parametrize("text, message", [("{not json", "not a JSON config"), ('{"steps": "abc"}', "steps must be an integer"),
                                           ('{"colour": 1}', "unknown config field(s) colour"), ("[1, 2]", "must be a JSON object")])
def test_bad_config_file(text, message, tmp_path, capsys):
    (tmp_path / "config.json").write_text(text)
    err = one_line_error(capsys, main(["generate", "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "new")]))
    assert message in err and not (tmp_path / "new").exists()


def test_output_that_is_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    err = one_line_error(capsys, main(["generate", "a red mug", "--out", str(tmp_path / "taken")]))
    assert "it is a file" in err and (tmp_path / "taken").read_text() == "x"


def test_output_folder_that_cannot_be_made():
    """/proc takes no new folders, even from root, whom the permission check lets through."""
    with pytest.raises(InputError, match="cannot write to output directory /proc/sds3d/run"):
        generate(tiny_config("/proc/sds3d/run", steps=1), prior=toy_prior(), progress=False)


# a finished run resumed with settings that do not match it: refused before anything is written
BAD_RESUMES = {
    ("--representation", "nerf"): "representation ('gaussians' -> 'nerf')",
    ("--set", "prompt=a blue car"): "prompt ('a red mug' -> 'a blue car')",
    ("--set", "sds.guidance_scale=7"): "sds.guidance_scale (5.0 -> 7)",
    ("--steps", "2"): "is at step 4, beyond steps=2",
    ("--guidance", "vsd", "--particles", "2"): "guidance ('sds' -> 'vsd')",
}


@pytest.mark.parametrize("flags", list(BAD_RESUMES), ids=[" ".join(f) for f in BAD_RESUMES])
def test_resume_that_does_not_match_leaves_the_run_untouched(flags, finished, tmp_path, capsys):
    run = shutil.copytree(finished, tmp_path / "run")
    before = contents(run)
    err = one_line_error(capsys, main(["generate", "--out", str(run), "--resume", *flags]))
    assert BAD_RESUMES[flags] in err
    assert contents(run) == before


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _nan_means(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["representation"]["params.means"][0, 0] = float("nan")
    torch.save(state, path)


def _claim_nerf(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "representation": "nerf"}))


DAMAGE = {
    "truncated checkpoint": (lambda run: _truncate(run / "checkpoint.pt"), "not a readable checkpoint"),
    "empty checkpoint": (lambda run: (run / "checkpoint.pt").write_bytes(b""), "the checkpoint file is empty"),
    "text checkpoint": (lambda run: (run / "checkpoint.pt").write_text("hello"), "not a readable checkpoint"),
    "png checkpoint": (lambda run: shutil.copy(run / "preview.png", run / "checkpoint.pt"), "checkpoint"),
    "list checkpoint": (lambda run: torch.save([1, 2], run / "checkpoint.pt"), "not a checkpoint (it holds a list"),
    "dict without weights": (lambda run: torch.save({"step": 1}, run / "checkpoint.pt"),
                             "not an sds3d run checkpoint"),
    "NaN positions": (lambda run: _nan_means(run / "checkpoint.pt"), "non-finite values (NaN or inf) in params.means"),
    "config names another representation": (_claim_nerf, "does not hold the nerf that config.json names"),
    "config.json not JSON": (lambda run: (run / "config.json").write_text("{"), "not a JSON config"),
    "config.json with a bad value": (lambda run: (run / "config.json").write_text('{"steps": "abc"}'),
                                     "steps must be an integer"),
    "no checkpoint": (lambda run: (run / "checkpoint.pt").unlink(), "is not a run directory"),
}


@pytest.mark.parametrize("damage, command", [(damage, command) for damage in DAMAGE
                                             for command in ("render", "export", "eval", "resume")
                                             # a resume without checkpoint starts afresh; one whose config.json
                                             # names another representation differs from the flags first
                                             if command != "resume" or damage not in ("no checkpoint",
                                                                                      "config names another representation")])
def test_damaged_run_directory(damage, command, finished, tmp_path, capsys):
    run = shutil.copytree(finished, tmp_path / "run")
    DAMAGE[damage][0](run)
    before = contents(run)
    argv = {"render": ["render", str(run), "--frames", "2", "--resolution", "16"],
            "export": ["export", str(run), "--out", str(run / "copy.ply")],
            "eval": ["eval", str(run)],
            "resume": ["generate", "a red mug", "--out", str(run), "--resume"]}[command]
    err = one_line_error(capsys, main(argv))
    assert DAMAGE[damage][1] in err
    assert contents(run) == before


def test_no_such_particle(finished, capsys):
    err = one_line_error(capsys, main(["export", str(finished), "--particle", "3", "--out", "/tmp/x.ply"]))
    assert "there is no particle 3" in err


def _mesh_ply_not_3dgs(path: Path) -> None:
    import trimesh

    trimesh.creation.box().export(path)


def _gaussian_ply(path: Path, nan: bool = False) -> None:
    from sds3d.representations import Gaussians, GaussiansConfig

    gaussians = Gaussians.random_in_sphere(GaussiansConfig(num_points=20), torch.Generator().manual_seed(0))
    if nan:
        with torch.no_grad():
            gaussians.params["means"][3, 1] = float("nan")
    gaussians.save_ply(path)


PLY_CASES = {
    "NaN positions": (lambda p: _gaussian_ply(p, nan=True), "NaN or infinite"),
    "truncated": (lambda p: (_gaussian_ply(p), _truncate(p)), "not a readable PLY"),
    "a mesh PLY": (_mesh_ply_not_3dgs, "not a 3DGS PLY"),
    "text": (lambda p: p.write_text("hello"), "not a readable PLY"),
}


@pytest.mark.parametrize("case", list(PLY_CASES))
def test_bad_gaussian_ply(case, tmp_path):
    from sds3d.representations import Gaussians

    path = tmp_path / "asset.ply"
    PLY_CASES[case][0](path)
    with pytest.raises(InputError, match=PLY_CASES[case][1]) as error:
        Gaussians.load_ply(path)
    assert len(str(error.value).splitlines()) == 1


def _mesh(path: Path, nan: bool = False) -> None:
    import trimesh

    box = trimesh.creation.box()
    vertices = np.array(box.vertices)
    if nan:
        vertices[0, 0] = np.nan
    trimesh.Trimesh(vertices, box.faces, process=False).export(path)


MESH_CASES = {
    "NaN positions": ("mesh.obj", lambda p: _mesh(p, nan=True), "NaN or infinite"),
    "truncated glb": ("mesh.glb", lambda p: (_mesh(p), _truncate(p)), "not a readable mesh file"),
    "text as glb": ("mesh.glb", lambda p: p.write_text("hello"), "not a readable mesh file"),
    "binary junk as obj": ("mesh.obj", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), "no triangles"),
    "empty obj": ("mesh.obj", lambda p: p.write_text(""), "no triangles"),
    "missing": ("mesh.obj", lambda p: None, "no such mesh file"),
}


@pytest.mark.parametrize("case", list(MESH_CASES))
def test_bad_mesh_file(case, tmp_path):
    from sds3d.representations import Mesh

    name, make, message = MESH_CASES[case]
    make(tmp_path / name)
    with pytest.raises(InputError, match=message) as error:
        Mesh.load(tmp_path / name)
    assert len(str(error.value).splitlines()) == 1


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    from sds3d.app.runner import Runner

    return Runner(tmp_path_factory.mktemp("app_runs"))


WEB_CASES = {
    "NUL prompt": ({"prompt": "\u0000\u0000\u0000"}, "control character"),
    "long negative prompt": ({"negative_prompt": "x" * 98000}, "negative prompt is 98000 characters long"),
    "NaN guidance scale": ({"guidance_scale": float("nan")}, "Guidance scale must be a finite number"),
    "text guidance scale": ({"guidance_scale": "abc"}, "Guidance scale must be a number"),
    "negative guidance scale": ({"guidance_scale": -3}, "Guidance scale must be above 0"),
    "huge seed": ({"seed": 2**64}, "Seed must be between 0"),
    "zero steps": ({"steps": 0}, "Steps must be between 1"),
    "unknown prior": ({"prior": "some-unknown-name"}, "Unknown prior"),
    "unknown guidance": ({"guidance": "magic"}, "unknown guidance"),
}


@pytest.mark.parametrize("case", list(WEB_CASES))
def test_bad_web_request(case, runner):
    from sds3d.app.runner import RunRequest

    fields, message = WEB_CASES[case]
    before = sorted(runner.runs_dir.iterdir())
    with pytest.raises(InputError, match=message) as error:
        runner.start(RunRequest(**{"prompt": "a red mug", **fields}), owner="page")
    assert len(str(error.value).splitlines()) == 1
    assert sorted(runner.runs_dir.iterdir()) == before  # no run directory was made
