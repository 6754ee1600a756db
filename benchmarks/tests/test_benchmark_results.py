"""The committed guidance table (benchmarks/results/guidance_table/) against its schema: one line per
run with typed scores, every settings hash stored once, features and front views keyed by the runs,
and table.md / grid.png exactly what benchmarks/guidance_table.py renders from them."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sds3d.guidance.registry import GUIDANCE, LIBRARY_GUIDANCE

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from guidance_table import Ledger, ledger_table, run_id, settings_hash  # noqa: E402
from text_to_3d import suite  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "guidance_table"
FILES = {"runs.jsonl", "settings.jsonl", "features.npz", "pictures.npz", "table.md", "grid.png"}
SCORES = ("kind_acc", "color_acc", "chamfer", "saturation", "seconds", "unet_evals_per_step")
DIVERSITY_PROMPTS, SEEDS = 3, 3


def lines(name):
    return [json.loads(line) for line in (RESULTS / name).read_text().splitlines()]


def test_the_folder_holds_the_table_as_data_only():
    assert {path.name for path in RESULTS.iterdir()} == FILES


def test_every_run_line_has_its_fields_with_their_types():
    for run in lines("runs.jsonl"):
        required = {"guidance", "prompt", "seed", "settings_hash", "janus_rate", *SCORES}
        assert set(run) in (required, required | {"shape_acc"}), run  # runs before shape accuracy lack it
        assert run.get("shape_acc") in (None, 0.0, 1.0)
        assert run["guidance"] in GUIDANCE and isinstance(run["prompt"], str)
        assert type(run["seed"]) is int and run["seed"] >= 0
        assert isinstance(run["settings_hash"], str) and len(run["settings_hash"]) == 16
        for key in SCORES:
            assert type(run[key]) in (int, float) and np.isfinite(run[key]) and run[key] >= 0, (key, run)
        assert run["kind_acc"] <= 1 and run["color_acc"] <= 1 and run["saturation"] <= 1
        assert run["janus_rate"] is None or 0 <= run["janus_rate"] <= 1


def test_the_table_is_complete_and_each_run_is_there_once():
    ids = [run_id(run["guidance"], run["prompt"], run["seed"]) for run in lines("runs.jsonl")]
    table = [name for name in GUIDANCE if name not in LIBRARY_GUIDANCE]
    expected = [run_id(name, prompt, seed) for name in table for index, prompt in enumerate(suite())
                for seed in range(SEEDS if index < DIVERSITY_PROMPTS else 1)]
    assert ids == expected


def test_settings_are_stored_once_per_hash_and_every_hash_is_stored():
    settings = lines("settings.jsonl")
    hashes = [record["settings_hash"] for record in settings]
    assert len(hashes) == len(set(hashes))
    for record in settings:
        assert set(record) == {"settings_hash", "settings"}
        assert settings_hash(record["settings"]) == record["settings_hash"]
        assert "prompt" not in record["settings"] and "seed" not in record["settings"]
    by_hash = {record["settings_hash"]: record["settings"] for record in settings}
    runs = lines("runs.jsonl")
    assert {run["settings_hash"] for run in runs} == set(by_hash)
    for run in runs:
        assert by_hash[run["settings_hash"]]["guidance"] == run["guidance"]


def test_features_and_pictures_are_keyed_by_the_runs():
    runs = lines("runs.jsonl")
    with np.load(RESULTS / "features.npz") as features, np.load(RESULTS / "pictures.npz") as pictures:
        diverse = {run_id(r["guidance"], r["prompt"], r["seed"]) for r in runs
                   if r["prompt"] in suite()[:DIVERSITY_PROMPTS]}
        assert set(features.files) == diverse
        assert set(pictures.files) == {run_id(r["guidance"], r["prompt"], r["seed"]) for r in runs}
        shapes = {features[key].shape for key in features.files}
        assert len(shapes) == 1 and next(iter(shapes))[0] == 16  # the 16 evaluation views
        assert all(features[key].dtype == np.float16 and np.isfinite(features[key]).all() for key in features.files)
        assert all(pictures[key].shape == (64, 64, 3) and pictures[key].dtype == np.uint8 for key in pictures.files)


@pytest.fixture(scope="module")
def rendered():
    return ledger_table(Ledger(RESULTS))


def test_table_md_is_what_the_script_renders_from_the_runs(rendered):
    assert (RESULTS / "table.md").read_text() == rendered[0]


def test_grid_png_is_what_the_script_renders_from_the_pictures(rendered):
    assert np.array_equal(np.asarray(Image.open(RESULTS / "grid.png").convert("RGB")), rendered[1])
