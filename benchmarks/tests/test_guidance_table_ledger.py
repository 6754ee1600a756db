"""The guidance table's ledger (benchmarks/guidance_table.py): runs recorded as lines with a settings
hash, read back only while their settings match, and a complete table published as data."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sds3d.generate import GenerateConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
import guidance_table  # noqa: E402
from guidance_table import (Ledger, ledger_table, recorded_run, run_id, run_settings, settings_hash,  # noqa: E402
                             table_config)


def record(ledger: Ledger, config: GenerateConfig, kind_acc: float = 1.0, features: bool = False) -> dict:
    rng = np.random.default_rng(config.seed + 10 * len(ledger.runs))
    row = {"guidance": config.guidance, "prompt": config.prompt, "seed": config.seed, "kind_acc": kind_acc,
           "color_acc": 1.0, "janus_rate": None, "chamfer": 0.05, "saturation": 0.5, "seconds": 100.0 + config.seed,
           "unet_evals_per_step": 2.0}
    picture = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return ledger.record(config, row, picture, torch.from_numpy(rng.normal(size=(16, 8))) if features else None)


def test_runs_are_read_back_only_with_their_settings(tmp_path):
    ledger = Ledger(tmp_path)
    config = table_config(prompt="a red cube", guidance="sds", seed=0)
    run = record(ledger, config, features=True)
    record(ledger, dataclasses.replace(config, prompt="a blue sphere", seed=1))

    again = Ledger(tmp_path)
    assert again.find(config) == run and run["settings_hash"] == settings_hash(run_settings(config))
    assert len((tmp_path / "settings.jsonl").read_text().splitlines()) == 1  # prompt and seed are in the run line
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 2
    key = run_id("sds", "a red cube", 0)
    assert again.picture(key).shape == (64, 64, 3) and again.picture(key).dtype == np.uint8
    assert again.features(key).shape == (16, 8) and again.features(run_id("sds", "a blue sphere", 1)) is None

    assert again.find(dataclasses.replace(config, out="elsewhere", turntable_format="mp4", preview_every=0)) == run
    assert again.find(dataclasses.replace(config, dsd=dataclasses.replace(config.dsd, alpha_sparsity=0.5))) == run
    assert again.find(dataclasses.replace(config, sds=dataclasses.replace(config.sds, guidance_scale=3.0))) is None
    assert again.find(dataclasses.replace(config, steps=10)) is None
    assert again.find(dataclasses.replace(config, seed=2)) is None


def test_a_field_added_after_a_run_matches_at_its_default(tmp_path):
    ledger = Ledger(tmp_path)
    config = table_config(prompt="a red cube", guidance="vsd")
    run = record(ledger, config)
    del ledger.settings[run["settings_hash"]]["vsd"]["particles"]  # as recorded before the field existed
    assert ledger.find(config) == run
    assert ledger.find(dataclasses.replace(config, vsd=dataclasses.replace(config.vsd, particles=3))) is None


def test_the_last_line_of_a_run_counts(tmp_path):
    ledger = Ledger(tmp_path)
    config = table_config(prompt="a red cube", guidance="sds")
    retuned = dataclasses.replace(config, sds=dataclasses.replace(config.sds, guidance_scale=30.0))
    record(ledger, config, kind_acc=0.5)
    run = record(Ledger(tmp_path), retuned, kind_acc=0.75)
    again = Ledger(tmp_path)
    assert again.find(config) is None and again.find(retuned) == run
    assert len(again.settings) == 2


def table_args(tmp_path, *extra):
    return ["guidance_table.py", "--guidance", "sds", "--kinds", "cube,sphere", "--diversity-prompts", "1",
            "--recorded-only", "--out", str(tmp_path / "out"), "--results", str(tmp_path / "results"), *extra]


def test_a_table_is_published_only_when_complete_and_reads_back_the_same(tmp_path, monkeypatch, capsys):
    working = Ledger(tmp_path / "out")
    for prompt in ("an orange cube", "a purple sphere"):
        record(working, table_config(prompt=prompt, guidance="sds", seed=0), features=True)
    monkeypatch.setattr(sys, "argv", table_args(tmp_path, "--publish"))
    with pytest.raises(SystemExit, match="runs are missing"):  # seeds 1 and 2 of the first prompt
        guidance_table.main()
    assert not (tmp_path / "results").exists()

    for seed in (1, 2):
        record(working, table_config(prompt="an orange cube", guidance="sds", seed=seed), features=True)
    guidance_table.main()
    results = Ledger(tmp_path / "results")
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "features.npz", "grid.png", "pictures.npz", "runs.jsonl", "settings.jsonl", "table.md"]
    assert list(results.runs) == [run_id("sds", "an orange cube", s) for s in (0, 1, 2)] + [
        run_id("sds", "a purple sphere", 0)]
    table, grid = ledger_table(results)
    assert table == (tmp_path / "results" / "table.md").read_text() == (tmp_path / "out" / "table.md").read_text()
    from PIL import Image
    assert np.array_equal(np.asarray(Image.open(tmp_path / "results" / "grid.png")), grid)
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])["rows"][0]
    assert summary["prompts"] == 2 and summary["diversity"] > 0

    # the published table is read back, with its features, for the same settings
    config = table_config(prompt="an orange cube", guidance="sds", seed=1)
    run = recorded_run(config, [Ledger(tmp_path / "empty"), results], keep_features=True)
    assert run["run"] == results.runs[run_id("sds", "an orange cube", 1)]
    assert torch.equal(run["features"], working.features(run_id("sds", "an orange cube", 1)))
