"""A fresh run in a folder that holds an earlier run: the earlier run's files go, nothing else does;
the CLI's default folder moves to `<folder>_<n>` instead."""

import json
import warnings

import pytest
from test_generate import prior, tiny_config

from sds3d.config import save_json
from sds3d.generate import GenerateConfig, generate
from sds3d.run_folder import ReplacedRunWarning, choose_run_folder, earlier_run


def fake_run(folder, finished=True, prompt="a red mug"):
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"")
    (folder / "config.json").write_text(json.dumps({"prompt": prompt, "steps": 600}))
    if finished:
        (folder / "metrics.json").write_text(json.dumps({"steps": 600}))
    return folder


def test_a_fresh_run_replaces_the_earlier_run_and_keeps_other_files(tmp_path):
    generate(tiny_config(tmp_path, preview_every=6), prior=prior(), progress=False)
    (tmp_path / "particle_1").mkdir()
    (tmp_path / "features").mkdir()  # a feature field of the earlier asset
    (tmp_path / "notes.txt").write_text("mine")
    assert (tmp_path / "previews" / "step_00012.png").exists() and (tmp_path / "asset.ply").exists()

    def crash(step, logs, output):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.warns(ReplacedRunWarning, match="held a finished run of 'a red mug': replaced"), \
            pytest.raises(KeyboardInterrupt):
        generate(tiny_config(tmp_path, preview_every=0, checkpoint_every=1), prior=prior(), progress=False,
                 callback=crash)
    left = {path.name for path in tmp_path.iterdir()}
    assert {"asset.ply", "metrics.json", "turntable.gif", "preview.png", "previews", "particle_1",
            "features"}.isdisjoint(left)
    assert {"checkpoint.pt", "config.json", "notes.txt"} <= left
    assert earlier_run(tmp_path) == "an unfinished run of 'a red mug'"


def test_resuming_replaces_nothing(tmp_path):
    config = tiny_config(tmp_path)
    stops = iter([False, True])
    generate(config, prior=prior(), progress=False, should_stop=lambda: next(stops, False))
    assert earlier_run(tmp_path) == "an unfinished run of 'a red mug'"  # stopped early: outputs, fewer steps
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReplacedRunWarning)
        generate(config, prior=prior(), progress=False, resume=True)
    assert earlier_run(tmp_path) == "a finished run of 'a red mug'"


def test_the_default_folder_moves_to_the_next_unused_one(tmp_path):
    base = tmp_path / "a_red_mug"
    assert choose_run_folder(base, default=True, resume=False) == (base, None)
    fake_run(base)
    fake_run(tmp_path / "a_red_mug_2", finished=False)
    folder, note = choose_run_folder(base, default=True, resume=False)
    assert folder == tmp_path / "a_red_mug_3"
    assert note == f"{base} holds a finished run of 'a red mug' (`--out {base}` replaces it); writing to {folder}"
    folder, note = choose_run_folder(tmp_path / "a_red_mug_2", default=True, resume=False)
    assert folder == tmp_path / "a_red_mug_2_2"
    assert f"`--out {tmp_path / 'a_red_mug_2'} --resume` continues it" in note


def test_a_chosen_folder_is_kept_and_resume_says_nothing(tmp_path):
    run = fake_run(tmp_path / "mine", finished=False, prompt="a blue chair")
    assert choose_run_folder(run, default=False, resume=False) == (
        run, f"{run} holds an unfinished run of 'a blue chair', which this run replaces")
    assert choose_run_folder(run, default=True, resume=True) == (run, None)
    (run / "checkpoint.pt").unlink()  # config.json alone is no run
    assert earlier_run(run) is None


def test_the_cli_writes_a_second_run_of_a_prompt_beside_the_first(tmp_path, monkeypatch, capsys):
    import importlib

    from sds3d.cli import main

    class Stop(Exception):
        pass

    def started(config, **kwargs):  # where generate would write; the run itself is not needed here
        raise Stop(config.out)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(importlib.import_module("sds3d.generate"), "generate", started)
    fake_run(tmp_path / "runs" / "a_red_mug")
    with pytest.raises(Stop, match="runs/a_red_mug_2"):
        main(["generate", "a red mug"])
    assert capsys.readouterr().err.strip() == ("sds3d: note: runs/a_red_mug holds a finished run of 'a red mug' "
                                               "(`--out runs/a_red_mug` replaces it); writing to runs/a_red_mug_2")
    for args in (["--resume"], ["--out", "runs/a_red_mug"]):
        with pytest.raises(Stop, match="runs/a_red_mug$"):
            main(["generate", "a red mug", *args])
    save_json(GenerateConfig(out="runs/a_red_mug"), tmp_path / "runs" / "a_red_mug" / "config.json")
    with pytest.raises(Stop, match="runs/a_red_mug_2"):  # re-running a run's config keeps that run
        main(["generate", "--config", "runs/a_red_mug/config.json", "--set", "sds.guidance_scale=30"])
