"""benchmarks/editing.py at a tiny size: the ground-truth oracle teacher on a few hundred Gaussians,
the exact-denoiser toy prior for the edit loop; its tables, resume, picture and JSON line. The runs
are marked slow (2-3 minutes together on a loaded 2-core machine): `pytest -m slow` runs them."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from toy_priors import GaussianToyPrior

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
import editing  # noqa: E402

from sds3d.evaluate import evaluation_cameras  # noqa: E402
from sds3d.world import COLORS  # noqa: E402
from sds3d.world.evaluator import Evaluator  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_nearest_color_sees_through_shading_and_psnr_is_analytic():
    for name, spec in COLORS.items():
        for shade in (0.4, 0.7, 1.0):
            assert editing.nearest_color(shade * torch.tensor(spec.rgb)) == name
    a = torch.zeros(10, 3)
    assert editing.psnr(a + 0.1, a) == pytest.approx(20.0)
    assert editing.psnr(a, a) == 100.0


def test_recolour_cases_cover_twenty_parts_in_a_colour_they_do_not_have():
    cases = editing.recolour_cases(None)
    assert len(cases) >= 20 and len(set(cases)) == len(cases)
    assert all(colour != "red" and colour in COLORS for _, _, _, colour in cases)


@pytest.mark.slow  # about a minute on a loaded 2-core machine
def test_selection_and_recolour_with_the_oracle_hit_the_part_and_leave_the_rest_and_resume(tmp_path):
    objects = editing.Objects(None, "oracle", points=1500, steps=5)
    path = tmp_path / "recolour.jsonl"
    rows, pictures = editing.recolour_table(objects, Evaluator.load(), path, "oracle-1500", limit=2)  # cap, stem
    assert [(r["kind"], r["part"]) for r in rows] == [("mushroom", "cap"), ("mushroom", "stem")]
    for row in rows:
        assert row["selection_iou"] > 0.6
        assert row["part_color_acc"] >= 0.75, row
        assert row["part_color_acc_true_selection"] == 1.0, row  # the measure's ceiling is reachable
        assert row["outside_psnr_db"] > 20, row
    assert len(pictures) == 2 and pictures[0].shape[0] == 3 and pictures[0].dtype == np.uint8
    # the selected part changed and the highlight differs from the plain render
    assert np.abs(pictures[0][0].astype(int) - pictures[0][2]).max() > 50
    assert np.abs(pictures[0][0].astype(int) - pictures[0][1]).max() > 50

    # a wrong selection (nothing) leaves the part red: the colour accuracy must say so
    gaussians, parts, teacher, _ = objects.get("mushroom")
    cameras = evaluation_cameras()
    wrong, _ = editing.measure_recolour(gaussians, parts, teacher, Evaluator.load(), cameras, "mushroom", 0, "nonexistent",
                                        "blue")
    assert wrong["selected"] == 0 and wrong["part_color_acc"] == 0.0 and wrong["outside_psnr_db"] == 100.0
    assert wrong["part_color_acc_true_selection"] == 1.0

    before = path.read_text()
    again, new_pictures = editing.recolour_table(editing.Objects(None, "oracle", 1500, 5), None, path, "oracle-1500",
                                                 limit=2)
    assert path.read_text() == before and again == rows and new_pictures == []

    selection = editing.selection_table(objects, tmp_path / "selection.jsonl", "oracle-1500", limit=3)  # cube, sphere
    assert len(selection) == 6 and all(r["iou_visible"] > 0.95 for r in selection)


def test_an_edit_names_the_prior_it_is_given(tmp_path, monkeypatch):
    """--prior embedded-v2 loads v2 and the edit's config must say so (`edit` refuses a prior other
    than the config's)."""
    seen = []

    def fake_edit(source, target, config, prior, **kwargs):
        seen.append((config.prior, prior))
        return SimpleNamespace(metrics={})

    monkeypatch.setattr("sds3d.edit.edit", fake_edit)
    loaded = object()
    editing.run_edit("a red mug", "mug", "red", "a blue mug", "pds", 50, 1, tmp_path, loaded, prior_spec="embedded-v2")
    assert seen == [("embedded-v2", loaded)]


@pytest.mark.slow  # about a minute on a loaded 2-core machine
def test_global_table_runs_every_score_once_and_resumes(tmp_path):
    loads = []

    def prior_loader():
        loads.append(1)
        return GaussianToyPrior({"a red mug": 0.2, "a blue mug": 0.8, "": 0.0}, resolution=32)

    path = tmp_path / "global.jsonl"
    rows = editing.global_table(path, limit=1, points=300, steps=2, work=tmp_path / "work", prior_loader=prior_loader)
    assert [r["guidance"] for r in rows] == list(editing.GUIDANCES) and len(loads) == 4
    for row in rows:
        assert row["source"] == "a red mug" and row["target"] == "a blue mug" and row["target_acc"] == row["color_acc"]
        assert 0 <= row["target_acc"] <= 1 and np.isfinite(row["chamfer_to_source"]) and row["seconds"] > 0
    assert editing.global_table(path, 1, 300, 2, tmp_path / "work", prior_loader) == rows and len(loads) == 4


def test_runs_share_a_table_and_each_resumes_only_its_own_rows(tmp_path, monkeypatch):
    """Two priors' global edits go to one global.jsonl: the second run must not take the first one's
    rows for its own, and each resumes its own rows only."""
    edits = []

    def fake_run_edit(source, kind, colour, target, guidance, points, steps, work, prior, prior_spec):
        edits.append(prior_spec)
        return {"color_acc": 1.0, "kind_acc": 1.0, "chamfer_to_source": 0.01, "seconds": 1.0}

    monkeypatch.setattr(editing, "run_edit", fake_run_edit)
    path = tmp_path / "global.jsonl"

    def run(prior_spec):
        return editing.global_table(path, 1, 300, 2, tmp_path, lambda: None, prior_spec=prior_spec)

    embedded, toy = run("embedded"), run("toy")
    assert edits == ["embedded"] * 4 + ["toy"] * 4
    assert {r["run"] for r in embedded} == {"embedded"} and {r["run"] for r in toy} == {"toy"}
    assert run("embedded") == embedded and run("toy") == toy and len(edits) == 8
    assert [json.loads(line)["run"] for line in path.read_text().splitlines()] == ["embedded"] * 4 + ["toy"] * 4


@pytest.mark.slow  # about a minute on a loaded 2-core machine
def test_main_writes_tables_grid_and_a_json_last_line(tmp_path, capsys):
    summary = editing.main(["--teacher", "oracle", "--limit", "1", "--points", "1500", "--distill-steps", "5",
                            "--tables", "selection,recolour", "--threads", "1", "--out", str(tmp_path)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == summary == json.loads((tmp_path / "summary.jsonl").read_text().splitlines()[-1])
    assert set(last) >= {"selection_iou", "recolour_part_acc", "outside_psnr_db", "edit_seconds", "global"}
    assert last["teacher"] == "oracle" and last["selection_queries"] == 2 and last["recolour_cases"] == 1
    assert last["edit_seconds"] is None and last["global"] == {}
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape[0] >= 3 * 64 and grid.shape[0] > grid.shape[1]  # three rows of one case
    run = "oracle-1500-context-grown"
    assert last["runs"] == {"selection": run, "recolour": run}
    for table in ("selection.jsonl", "recolour.jsonl"):
        assert {json.loads(line)["run"] for line in (tmp_path / table).read_text().splitlines()} == {run}
