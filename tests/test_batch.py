"""Batch generation: prompts files (checked before any run), runs in this process and on Ray, the manifest
and contact sheet, skipping finished runs, continuing interrupted ones, and surviving a killed Ray worker."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from toy_priors import GaussianToyPrior

from sds3d import batch
from sds3d.batch import read_prompts, run_batch
from sds3d.cli import main
from sds3d.errors import InputError
from sds3d.generate import GenerateConfig, generate
from sds3d.representations import GaussiansConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["steps=8", "views_per_step=2", "resolution=16", "checkpoint_every=4", "preview_every=0", "turntable_frames=4",
        "turntable_resolution=16", "gaussians.num_points=150"]


def tiny_base(**changes) -> GenerateConfig:
    config = GenerateConfig(steps=8, views_per_step=2, resolution=16, checkpoint_every=4, preview_every=0,
                            turntable_frames=4, turntable_resolution=16, gaussians=GaussiansConfig(num_points=150))
    return replace(config, **changes)


def toy_prior():
    return GaussianToyPrior({"": 0.0}, default_mean=0.6, resolution=16)


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_prompt_files_give_one_config_per_line(tmp_path):
    text = read_prompts(write(tmp_path / "p.txt", "# comment", "a red mug", "", "  a  red mug ", "a teapot"),
                        tmp_path / "out", tiny_base())
    assert [(item.line, item.name, item.config.prompt) for item in text] == [
        (2, "a_red_mug", "a red mug"), (4, "a_red_mug-2", "a red mug"), (5, "a_teapot", "a teapot")]
    assert all(item.config.steps == 8 and Path(item.config.out) == (tmp_path / "out" / item.name).absolute()
               for item in text)
    lines = read_prompts(write(tmp_path / "p.jsonl", '{"prompt": "a red mug", "seed": 5, "sds.guidance_scale": 30}',
                               '{"prompt": "a blue cube", "camera": {"elevation_range": [0, 30]}}'),
                         tmp_path / "out", tiny_base())
    first, second = (item.config for item in lines)
    assert (first.seed, first.sds.guidance_scale, second.seed) == (5, 30, 0)
    assert second.camera.elevation_range == (0, 30) and second.camera.fovy_range == (35.0, 45.0)


@pytest.mark.parametrize("name,lines,message", [
    ("p.jsonl", ['{"prompt": "a red mug"}', '{"prompt": "a cube", "steps": "abc"}'], "p.jsonl line 2: steps must be an integer"),
    ("p.jsonl", ['{"prompt": "a red mug"}', "", '{"prompt": "a cube",'], "p.jsonl line 3: not JSON"),
    ("p.jsonl", ['{"prompt": "a cube", "sds.scale": 3}'], "line 1: unknown config key 'sds.scale'"),
    ("p.jsonl", ['{"seed": 3}'], 'line 1: has no "prompt"'),
    ("p.jsonl", ['["a red mug"]'], "line 1: must be a JSON object"),
    ("p.jsonl", ['{"prompt": "a cube", "out": "/tmp/x"}'], 'line 1: sets "out"'),
    ("p.jsonl", ['{"prompt": "a cube", "seed": NaN}'], "line 1: NaN is not a number"),
    ("p.jsonl", ['{"prompt": "a cube", "guidance": "magic"}'], "line 1: unknown guidance 'magic'"),
    ("p.txt", ["a red mug", "x" * 301], "p.txt line 2: prompt is 301 characters long"),
    ("p.txt", ["# only a comment"], "no prompts"),
    ("p.csv", ["a red mug"], "give a .txt file"),
])
def test_a_bad_line_is_one_line_naming_it_before_any_run(tmp_path, capsys, name, lines, message):
    prompts = write(tmp_path / name, *lines)
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        read_prompts(prompts, tmp_path / "out", tiny_base())
    assert main(["batch", str(prompts), "--out", str(tmp_path / "out"), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_folder_with_another_runs_checkpoint_is_refused_before_any_run(tmp_path):
    prompts = write(tmp_path / "p.jsonl", '{"prompt": "a red mug"}', '{"prompt": "a teapot"}')
    generate(replace(tiny_base(prompt="a teapot", seed=9), out=str(tmp_path / "out" / "a_teapot")), prior=toy_prior(),
             progress=False)
    with pytest.raises(InputError, match=r"p.jsonl line 2: cannot resume .* seed \(9 -> 0\)"):
        read_prompts(prompts, tmp_path / "out", tiny_base())


def test_without_ray_more_workers_name_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(batch, "ray_available", lambda: False)
    prompts = write(tmp_path / "p.txt", "a red mug")
    for flags in (["--workers", "2"], ["--address", "ray://head:10001"]):
        assert main(["batch", str(prompts), "--out", str(tmp_path / "out"), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert "pip install 'sds3d[batch]'" in err and flags[0] in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "a_red_mug").exists()


def test_an_unreachable_cluster_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(batch, "ray_available", lambda: True)  # the address is checked before Ray is imported
    prompts = write(tmp_path / "p.txt", "a red mug")
    assert main(["batch", str(prompts), "--out", str(tmp_path / "out"), "--address", "ray://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach Ray at ray://127.0.0.1:1" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_in_process_batch_manifest_sheet_skip_and_resume(tmp_path):
    """Runs equal lone `generate` runs bit for bit; a second batch skips them; an interrupted run
    continues from its checkpoint to the same asset."""
    from PIL import Image

    prompts = write(tmp_path / "p.txt", "a red mug", "a teapot", "a red mug")
    items = read_prompts(prompts, tmp_path / "out", tiny_base())
    records = run_batch(items, tmp_path / "out", use_ray=False, prior=toy_prior(), progress=False)
    manifest = [json.loads(line) for line in (tmp_path / "out" / "batch.jsonl").read_text().splitlines()]
    assert manifest == records and [r["line"] for r in records] == [1, 2, 3]
    assert [r["status"] for r in records] == ["done"] * 3 and all(r["resumed_from"] == 0 for r in records)
    assert [r["asset"] for r in records] == ["a_red_mug/asset.ply", "a_teapot/asset.ply", "a_red_mug-2/asset.ply"]
    assert all(r["steps"] == 8 and r["seconds"] > 0 for r in records)
    assert records[0]["scores"]["kind"] == "mug" and 0 <= records[0]["scores"]["kind_acc"] <= 1
    assert records[1]["scores"] == {}  # a teapot is not a micro-world object
    assert json.loads((tmp_path / "out" / "a_red_mug" / "eval.json").read_text()) == records[0]["scores"]
    alone_prior = toy_prior()
    alone = generate(replace(items[0].config, out=str(tmp_path / "alone")), prior=alone_prior, progress=False)
    asset = (tmp_path / "out" / records[0]["asset"]).read_bytes()
    assert asset == (alone.out / "asset.ply").read_bytes() == (tmp_path / "out" / records[2]["asset"]).read_bytes()
    assert Image.open(tmp_path / "out" / "contact_sheet.png").size == (2 * batch.TILE, 2 * (batch.TILE + 14))

    before = (tmp_path / "out" / "a_red_mug" / "asset.ply").stat().st_mtime_ns
    again = run_batch(read_prompts(prompts, tmp_path / "out", tiny_base()), tmp_path / "out", use_ray=False,
                      prior=toy_prior(), progress=False)
    assert [r["status"] for r in again] == ["skipped"] * 3
    assert [r["scores"] for r in again] == [r["scores"] for r in records]
    assert (tmp_path / "out" / "a_red_mug" / "asset.ply").stat().st_mtime_ns == before

    interrupted = replace(items[0].config, out=str(tmp_path / "cut" / "a_red_mug"))
    calls = []
    generate(interrupted, prior=toy_prior(), progress=False, callback=lambda *_: calls.append(1),
             should_stop=lambda: len(calls) >= 5)  # stops after step 5 with a checkpoint
    resumed_prior = toy_prior()
    (resumed,) = run_batch(read_prompts(write(tmp_path / "one.txt", "a red mug"), tmp_path / "cut", tiny_base()),
                           tmp_path / "cut", use_ray=False, prior=resumed_prior, progress=False)
    assert resumed["status"] == "done" and resumed["resumed_from"] == 5 and resumed["steps"] == 8
    assert resumed_prior.calls * 8 == alone_prior.calls * 3  # only steps 6 to 8 were computed
    assert (tmp_path / "cut" / "a_red_mug" / "asset.ply").read_bytes() == asset


def test_a_failed_run_is_recorded_and_the_batch_goes_on(tmp_path, monkeypatch):
    from sds3d.errors import TrainingDiverged

    real = batch._generate

    def diverge_on_teapot(config, prior):
        if config.prompt == "a teapot":
            raise TrainingDiverged("loss is NaN at step 3; lower the learning rates")
        return real(config, prior)

    monkeypatch.setattr(batch, "_generate", diverge_on_teapot)
    items = read_prompts(write(tmp_path / "p.txt", "a teapot", "a vase"), tmp_path / "out", tiny_base())
    records = run_batch(items, tmp_path / "out", use_ray=False, prior=toy_prior(), progress=False)
    assert [r["status"] for r in records] == ["failed", "done"]
    assert records[0]["error"] == "loss is NaN at step 3; lower the learning rates"


@pytest.mark.slow
def test_ray_batch_survives_a_killed_worker(tmp_path, capsys):
    """Two Ray workers x 1 thread through the CLI; one worker is SIGKILLed after its run's first checkpoint.
    Ray retries the run, which continues from the checkpoint; every asset equals that of the same batch
    run undisturbed in this process (1 thread per run there too)."""
    pytest.importorskip("ray")
    from batch import WorkerKiller

    lines = ['{"prompt": "a red mug", "steps": 40}', '{"prompt": "a teapot", "steps": 40}',
             '{"prompt": "a blue cube", "seed": 1}']
    prompts = write(tmp_path / "p.jsonl", *lines)
    flags = [f"--set={assignment}" for assignment in TINY + ["checkpoint_every=5", "gaussians.num_points=400"]]
    killer = WorkerKiller(tmp_path / "ray")
    killer.start()
    code = main(["batch", str(prompts), "--out", str(tmp_path / "ray"), "--workers", "2", "--threads-per-run", "1",
                 "--quiet", *flags])
    killer.stop.set()
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["done"] == 3
    assert killer.killed is not None
    records = [json.loads(line) for line in (tmp_path / "ray" / "batch.jsonl").read_text().splitlines()]
    killed = next(r for r in records if r["run"] == killer.killed[0])
    assert killed["status"] == "done" and killed["resumed_from"] >= 5

    from sds3d.guidance.registry import load_prior

    base = tiny_base(checkpoint_every=5, gaussians=GaussiansConfig(num_points=400))
    reference = run_batch(read_prompts(prompts, tmp_path / "local", base), tmp_path / "local", threads=1,
                          use_ray=False, prior=load_prior("embedded"), progress=False)
    for ours, theirs in zip(records, reference):
        assert (tmp_path / "ray" / ours["asset"]).read_bytes() == (tmp_path / "local" / theirs["asset"]).read_bytes()
        assert ours["scores"] == theirs["scores"]
