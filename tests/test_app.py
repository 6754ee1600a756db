"""The web UI's run management without a browser: limits, run directories, stop, errors, flags."""

import argparse
import json
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sds3d.app.limits import Limits
from sds3d.app.runner import OBJ_FILES, InputError, Run, Runner, RunRequest, default_guidance_scale, prior_choices
from sds3d.app.server import add_arguments, build_runner, served_paths
from sds3d.cli import build_parser, main
from sds3d.guidance.sds import SDSConfig

FAST = dict(turntable_frames=4, turntable_resolution=32)
# A micro-world object without a colour: the evaluator does not score it (scores take seconds, which
# tests that do not look at them need not spend) and it is no out-of-world prompt.
UNSCORED = "a mug"


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    return Runner(tmp_path_factory.mktemp("app") / "runs", limits=Limits(max_steps=50), **FAST)


@pytest.mark.parametrize("changes,message", [
    (dict(prompt="   "), "the prompt is empty"),
    (dict(prompt="x" * 301), "The prompt is 301 characters long; the limit is 300."),
    (dict(negative_prompt="y" * 400), "The negative prompt is 400 characters long; the limit is 300."),
    (dict(steps=0), "Steps must be between 1 and 50, got 0."),
    (dict(steps=51), "Steps must be between 1 and 50, got 51."),
    (dict(steps=2.5), "Steps must be a whole number, got 2.5."),
    (dict(seed=-1), "Seed must be between 0 and 2147483647, got -1."),
    (dict(resolution=48), "Resolution must be one of 32, 64, 128, got 48."),
    (dict(representation="hologram"), "unknown representation 'hologram'; choose one of gaussians, nerf, dmtet"),
    (dict(guidance="magic"), "unknown guidance 'magic'"),
    (dict(prior="/etc"), "Unknown prior '/etc'; this server offers embedded, embedded-v2, embedded-v3."),
    (dict(guidance="csd", guidance_scale=7.5), "csd has no guidance scale; leave the field empty."),
    (dict(guidance_scale=0), "Guidance scale must be above 0 and at most 1000, got 0."),
    (dict(guidance="vsd", particles=0), "Particles must be between 1 and 4, got 0."),
    (dict(guidance="vsd", particles=5), "Particles must be between 1 and 4, got 5."),
    (dict(particles=2), "2 particles need the vsd guidance (or redream; they share its LoRA); sds trains one asset"),
    (dict(guidance="redream"),
     "redream retrieves assets for the prompt from a library: this server offers none; pick another guidance."),
])
def test_requests_outside_the_limits_are_rejected_with_one_line(empty_runner, changes, message):
    request = RunRequest(**{"prompt": "a red mug", "steps": 5, **changes})
    with pytest.raises(InputError) as error:
        empty_runner.start(request, owner="page")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert list(empty_runner.runs_dir.iterdir()) == []  # nothing is created for a rejected request


def test_config_takes_the_request_and_the_operators_output_settings(runner):
    config = runner.config(RunRequest("  a   blue cube ", guidance="nfsd", steps=7, seed=3, guidance_scale=12,
                                      resolution=64))
    assert (config.prompt, config.guidance, config.steps, config.seed, config.resolution) == ("a blue cube", "nfsd", 7,
                                                                                              3, 64)
    assert config.nfsd.guidance_scale == 12.0 and config.sds.guidance_scale == SDSConfig.guidance_scale
    assert (config.turntable_frames, config.turntable_resolution, config.prior) == (4, 32, "embedded-v2")
    assert runner.config(RunRequest("a red mug", guidance="cds", steps=5)).cds.guidance_scale == (0, 101.0, 51.0, 3000)
    assert config.vsd.separate_unet  # VSD's LoRA must not land on the prior the runs share
    assert config.vsd.particles == 1
    assert runner.config(RunRequest("a red mug", guidance="vsd", steps=5, particles=3)).vsd.particles == 3


def test_a_request_without_prior_or_steps_runs_its_representations_tuned_ones(tmp_path):
    runner = Runner(tmp_path / "runs", limits=Limits(max_steps=1000), **FAST)
    gaussians, nerf = (runner.config(RunRequest("a red mug", representation=name)) for name in ("gaussians", "nerf"))
    assert (gaussians.prior, gaussians.steps, gaussians.views_per_step) == ("embedded-v2", 250, 3)
    assert (nerf.prior, nerf.steps, nerf.views_per_step) == ("embedded", 600, 4)
    chosen = runner.config(RunRequest("a red mug", representation="nerf", prior="embedded-v2", steps=9))
    assert (chosen.prior, chosen.steps) == ("embedded-v2", 9)
    assert Runner(tmp_path / "small", limits=Limits(max_steps=50), **FAST).config(RunRequest("a red mug")).steps == 50
    only_v1 = Runner(tmp_path / "v1", priors={"embedded": "embedded"}, **FAST)
    assert only_v1.prior_name(RunRequest("a red mug")) == "embedded"  # the tuned one is not offered: the first


def test_picking_a_representation_on_the_page_picks_its_prior_and_steps(tmp_path):
    from sds3d.app.ui import build_ui

    demo = build_ui(Runner(tmp_path / "runs", limits=Limits(max_steps=1000), **FAST))
    fns = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    changed = next(f.fn for f in fns if getattr(f, "name", "") == "representation_changed")
    assert [update["value"] for update in changed("nerf")] == ["embedded", 600]
    assert [update["value"] for update in changed("gaussians")] == ["embedded-v2", 250]


def test_default_guidance_scale_is_the_variants_constant():
    assert default_guidance_scale("sds") == SDSConfig.guidance_scale and default_guidance_scale("vsd") == 7.5
    assert default_guidance_scale("cds") is None  # a schedule
    assert default_guidance_scale("csd") is None  # no such field


def test_prior_allow_list(tmp_path):
    folder = tmp_path / "sd-2-1"
    folder.mkdir()
    choices = prior_choices([str(folder), "some-org/some-model", "embedded-v2"])
    assert choices == {"embedded": "embedded", "embedded-v2": "embedded-v2", "embedded-v3": "embedded-v3",
                       "sd-2-1": str(folder),
                       "some-org/some-model": "some-org/some-model"}
    with pytest.raises(ValueError, match="prior folder /no/such/folder does not exist"):
        prior_choices(["/no/such/folder"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "sd-2-1").mkdir()
    with pytest.raises(ValueError, match="two priors are named 'sd-2-1'"):
        prior_choices([str(folder), str(tmp_path / "other" / "sd-2-1")])


def _wait(run, timeout=120):
    assert run.finished.wait(timeout), "the run did not finish"
    assert run.error is None, run.error


def test_simultaneous_runs_get_their_own_directories_and_results(runner):
    first = runner.start(RunRequest("a red mug", steps=2, seed=1), owner="page-a")
    second = runner.start(RunRequest("a blue cube", steps=3, seed=2), owner="page-b")
    _wait(first), _wait(second)
    assert first.dir != second.dir and {first.dir.parent, second.dir.parent} == {runner.runs_dir}
    for run, prompt, steps, seed, kind in ((first, "a red mug", 2, 1, "mug"), (second, "a blue cube", 3, 2, "cube")):
        assert len(run.dir.name.split("-")[-1]) == 32  # 128 random bits chosen by the server
        config = json.loads((run.dir / "config.json").read_text())
        assert (config["prompt"], config["seed"], config["out"]) == (prompt, seed, str(run.dir))
        assert json.loads((run.dir / "metrics.json").read_text())["steps"] == steps
        assert [p.name for p in run.files()] == ["asset.ply", "turntable.gif", "preview.png", "metrics.json",
                                                 "metrics.csv", "loss.png", "config.json", "eval.json"]
        shared = (run.dir / "share" / "config.json").read_text()  # the download: no server path in it
        assert str(runner.runs_dir) not in shared and json.loads(shared)["prompt"] == prompt
        assert json.loads((run.dir / "eval.json").read_text()) == run.scores and run.scores["kind"] == kind
    assert first.snapshot().step == 2 and second.snapshot().step == 3
    views = first.config.views_per_step
    assert first.snapshot().renders.shape == (32, views * 32, 3)  # the step's views side by side


def test_the_camera_prior_is_offered_by_default_and_runs(tmp_path):
    runner = Runner(tmp_path / "runs", prior_choices([]), limits=Limits(max_steps=50), **FAST)
    assert runner.models["embedded-v2"].camera_conditioned and not runner.models["embedded"].camera_conditioned
    run = runner.start(RunRequest(UNSCORED, steps=2, prior="embedded-v2"), owner="page")
    _wait(run)
    assert json.loads((run.dir / "config.json").read_text())["prior"] == "embedded-v2"


def test_vsd_particles_are_all_offered_for_download(runner):
    run = runner.start(RunRequest("a red mug", guidance="vsd", steps=2, particles=2), owner="page-p")
    _wait(run)
    assert [str(p.relative_to(run.dir)) for p in run.files()] == [
        "asset.ply", "turntable.gif", "preview.png", "particles.png", "share/metrics.json", "metrics.csv", "loss.png",
        "share/config.json", "eval.json", "particle_1/asset.ply"]
    from sds3d.app.ui import final_text

    assert "2 particles" in final_text(run)


def test_stop_ends_the_run_and_keeps_the_partial_result(runner):
    run = runner.start(RunRequest("a dragon", steps=50), owner="page")
    deadline = time.monotonic() + 120
    while run.snapshot().step < 2 and not run.finished.is_set():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not runner.stop("another-page")  # a session can only stop its own run
    assert runner.stop("page")
    _wait(run)
    steps = json.loads((run.dir / "metrics.json").read_text())["steps"]
    assert 2 <= steps < 50 and run.snapshot().step == steps
    assert [p.name for p in run.files()] == ["asset.ply", "turntable.gif", "preview.png", "metrics.json", "metrics.csv",
                                             "loss.png", "config.json"]
    assert run.scores == {}  # "a dragon" is no micro-world prompt
    assert not runner.stop("page")  # finished runs are forgotten


def test_a_new_request_from_the_same_page_stops_its_previous_run(runner):
    first = runner.start(RunRequest(UNSCORED, steps=50), owner="page")
    second = runner.start(RunRequest(UNSCORED, steps=2), owner="page")
    _wait(first), _wait(second)
    assert first.stop_requested.is_set() and json.loads((first.dir / "metrics.json").read_text())["steps"] < 50


def test_a_gaussian_run_offers_its_mesh_as_glb_and_obj_upright(runner, tmp_path):
    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("xatlas")
    from test_export_orientation import FILE_AXES, _assert_up_and_front, _signpost

    from sds3d.representations import Gaussians, GaussiansConfig

    run = runner.start(RunRequest("a signpost", steps=2), owner="page-m")
    _wait(run)
    # the run's asset becomes a signpost: a post along the world's up (+z), its sign towards the front (+x)
    signpost = Gaussians.from_mesh(_signpost(), 4000, GaussiansConfig(init_opacity=0.9))
    with torch.no_grad():
        signpost.params["scales"].clamp_(max=float(np.log(0.02)))
    state = torch.load(run.dir / "checkpoint.pt", weights_only=True)
    torch.save({**state, "representation": signpost.state_dict()}, run.dir / "checkpoint.pt")

    files = run.export_meshes(texture_size=64, resolution=48, max_faces=800)
    assert [p.name for p in files] == ["asset.ply", "asset.glb", "asset_obj.zip", "turntable.gif", "preview.png",
                                       "metrics.json", "metrics.csv", "loss.png", "config.json"]
    assert run.asset().name == "asset.ply"  # the 3D viewer keeps showing the splats
    glb = trimesh.load(run.dir / "asset.glb", force="mesh")
    assert glb.visual.kind == "texture"
    _assert_up_and_front(np.asarray(glb.vertices), *FILE_AXES["+y"])
    with zipfile.ZipFile(run.dir / "asset_obj.zip") as archive:
        assert sorted(archive.namelist()) == sorted(OBJ_FILES)
        archive.extractall(tmp_path / "obj")
    obj = trimesh.load(tmp_path / "obj" / "asset.obj", force="mesh")
    assert obj.visual.kind == "texture"
    _assert_up_and_front(np.asarray(obj.vertices), *FILE_AXES["+y"])
    made = (run.dir / "asset.glb").stat().st_mtime_ns
    assert run.export_meshes() == files and (run.dir / "asset.glb").stat().st_mtime_ns == made  # made once


def test_a_mesh_needs_a_finished_run_with_an_asset(runner, tmp_path):
    run = Run(dir=tmp_path, config=runner.config(RunRequest("a red mug", steps=2)), prior=None)
    with pytest.raises(InputError, match="^The run is still going; make the mesh once it is done.$"):
        run.export_meshes()
    run.finished.set()
    with pytest.raises(InputError, match="^This run has no asset to make a mesh of.$"):
        run.export_meshes()
    assert list(tmp_path.iterdir()) == []


def _wait_for_step(run, step: int) -> None:
    deadline = time.monotonic() + 120
    while run.snapshot().step < step and not run.finished.is_set():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_runs_beyond_the_slots_wait_and_a_stopped_one_never_starts(runner, monkeypatch):
    monkeypatch.setattr(runner, "slots", threading.BoundedSemaphore(1))
    first = runner.start(RunRequest("a dragon", steps=50), owner="page-a")
    _wait_for_step(first, 2)
    second = runner.start(RunRequest("a dragon", steps=2), owner="page-b")
    third = runner.start(RunRequest("a dragon", steps=2), owner="page-c")
    time.sleep(0.5)
    assert list(second.dir.iterdir()) == list(third.dir.iterdir()) == []  # waiting: nothing written yet
    assert runner.stop("page-c") and runner.stop("page-a")
    _wait(first), _wait(second)
    assert third.finished.wait(60) and third.error == "Stopped before it started."
    assert list(third.dir.iterdir()) == [] and json.loads((second.dir / "metrics.json").read_text())["steps"] == 2


def test_a_failing_run_reports_one_line(runner, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory\nmore detail")

    monkeypatch.setattr("sds3d.app.runner.generate", broken)
    run = runner.start(RunRequest("a red mug", steps=2), owner="page")
    assert run.finished.wait(60)
    assert run.error == "The run failed: RuntimeError: out of memory"


def _args(*argv):
    return build_parser().parse_args(["app", *argv])


def test_server_flags(tmp_path, monkeypatch):
    runner = build_runner(_args("--runs-dir", str(tmp_path / "runs"), "--max-steps", "40", "--concurrency", "2"))
    assert runner.runs_dir == (tmp_path / "runs").resolve() and runner.limits.max_steps == 40
    assert [runner.slots.acquire(blocking=False) for _ in range(3)] == [True, True, False]  # --concurrency slots
    assert list(runner.priors) == ["embedded", "embedded-v2", "embedded-v3"]  # the shipped priors, v1 first (the default)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the default runs folder is made
    args = add_arguments(argparse.ArgumentParser()).parse_args([])
    assert (args.host, args.port, args.share, args.concurrency) == ("127.0.0.1", 7860, False, 1)
    default_root = build_runner(args).runs_dir
    assert default_root.parent == tmp_path.resolve() and default_root.name.startswith("sds3d-app-")
    assert served_paths(default_root) == []
    with pytest.raises(ValueError, match="--concurrency must be positive, got 0"):
        build_runner(_args("--concurrency", "0"))


def test_runs_outside_cwd_and_temp_must_be_listed_for_gradio(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert served_paths(tmp_path / "runs") == []
    assert served_paths(Path("/srv/sds3d-runs")) == ["/srv/sds3d-runs"]


@pytest.mark.parametrize("argv,message", [
    (["--prior", "/no/such/sd"], "prior folder /no/such/sd does not exist"),
    (["--runs-dir", "/proc/sds3d"], "cannot create runs directory /proc/sds3d"),
    (["--port", "0"], "--port must be positive, got 0"),
    (["--prior", "{tmp}"], "cannot load a prior: cannot tell which prior {tmp} holds"),
])
def test_bad_app_flags_are_one_line_errors(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()
    assert main(["app", *(arg.format(tmp=tmp_path) for arg in argv)]) == 2
    message = message.format(tmp=tmp_path)
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (loading a prior may draw a progress bar first)
    assert last.startswith("sds3d: error: ") and message in last
    left = [p.name for p in (tmp_path / "temp").iterdir() if not p.name.startswith("torchinductor_")]
    assert left == []  # no runs folder is left behind (torch's own compile cache may appear there)

