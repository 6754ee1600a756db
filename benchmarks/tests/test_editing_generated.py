"""The editing benchmark on generated assets: parts carried from the kind's mesh onto an asset, the
opacity-weighted IoU, and which run folders count."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from editing_generated import weighted_iou  # noqa: E402
from generated_parts import generated_runs, part_area_shares, transfer_parts  # noqa: E402

from sds3d.features.part_oracle import part_gaussians  # noqa: E402
from sds3d.world import KINDS  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_weighted_iou_is_the_weighted_ratio():
    mask = torch.tensor([True, True, False, False])
    truth = torch.tensor([True, False, True, False])
    weight = torch.tensor([2.0, 1.0, 1.0, 5.0])
    assert weighted_iou(mask, truth, weight) == pytest.approx(2.0 / 4.0)
    assert weighted_iou(mask, truth, torch.ones(4)) == pytest.approx(1.0 / 3.0)
    assert weighted_iou(mask & False, truth & False, weight) == 1.0


def test_part_area_shares_sum_to_one_and_the_mug_is_mostly_cup():
    shares = part_area_shares("mug")
    assert len(shares) == len(KINDS["mug"].parts) and shares.sum() == pytest.approx(1.0)
    assert shares[list(KINDS["mug"].parts).index("cup")] > 0.5


def test_a_moved_turned_and_scaled_copy_of_the_mesh_gets_its_own_parts_back():
    """The kind's own Gaussians, turned 10 degrees, scaled by 1.3 and shifted, as a generated asset:
    the transfer must undo the placement and label (nearly) every Gaussian with its true part."""
    gaussians, truth = part_gaussians("mug", count=3000)
    angle = math.radians(10.0)
    c, s = math.cos(angle), math.sin(angle)
    turn = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    with torch.no_grad():
        gaussians.params["means"].copy_(gaussians.means @ turn.T * 1.3 + torch.tensor([0.1, -0.05, 0.02]))
        gaussians.params["scales"].add_(math.log(1.3))
    labels = transfer_parts(gaussians, "mug")
    assert labels.yaw_degrees == pytest.approx(-10.0, abs=5.0)
    assert labels.labelled_fraction > 0.9
    labelled = labels.parts >= 0
    assert float((labels.parts[labelled] == truth[labelled]).float().mean()) > 0.9
    handle = list(KINDS["mug"].parts).index("handle")  # the small part lands on the handle, not the back
    assert float((labels.parts[truth == handle] == handle).float().mean()) > 0.8


def test_only_run_folders_of_micro_world_prompts_count(tmp_path):
    for name, prompt, files in (("a", "a red mug", ("config.json", "checkpoint.pt")),
                                ("b", "a dragon", ("config.json", "checkpoint.pt")),
                                ("c", "a blue car", ("config.json",))):
        (tmp_path / name).mkdir()
        for file in files:
            (tmp_path / name / file).write_text(json.dumps({"prompt": prompt}) if file == "config.json" else "")
    assert generated_runs(tmp_path) == [(tmp_path / "a", "mug", "red")]


@pytest.mark.slow  # distils the shipped part teacher on two assets: about a minute on a loaded 2-core machine
def test_generated_tables_on_ground_truth_stand_ins_select_the_parts_and_resume(tmp_path):
    """Run folders holding micro-world objects as Gaussians stand in for generated assets: the tables
    must find every part present, select the big ones well, write JSON rows, a picture, and resume."""
    import editing
    from editing_generated import GeneratedAssets, generated_recolour_table, generated_selection_table

    from sds3d.config import save_json
    from sds3d.features.distill import DistillConfig
    from sds3d.features.load import load_feature_teacher
    from sds3d.generate import GenerateConfig
    from sds3d.world.evaluator import Evaluator

    for kind, colour in (("mug", "red"), ("lamp", "blue")):
        gaussians, _ = part_gaussians(kind, colour, count=2000)
        run = tmp_path / "runs" / f"a_{colour}_{kind}"
        run.mkdir(parents=True)
        save_json(GenerateConfig(prompt=f"a {colour} {kind}", steps=10), run / "config.json")
        torch.save({"representation": gaussians.state_dict(), "step": 10}, run / "checkpoint.pt")
    assets = GeneratedAssets(tmp_path / "runs", load_feature_teacher(), DistillConfig(steps=20))
    path = tmp_path / "selection.jsonl"
    rows, pictures = generated_selection_table(assets, path, "part-teacher")
    assert len(rows) == 2 * (len(KINDS["lamp"].parts) + len(KINDS["mug"].parts))
    assert not any(r["absent"] for r in rows) and all(r["labelled_fraction"] > 0.9 for r in rows)
    big = {(r["kind"], r["part"]): r["iou"] for r in rows if r["phrasing"] == "the <part>"}
    assert big["mug", "cup"] > 0.8 and big["lamp", "shade"] > 0.8, big
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    assert len(pictures) == 2 and pictures[0].shape[0] == 3
    recolour = generated_recolour_table(assets, Evaluator.load(), tmp_path / "recolour.jsonl", "part-teacher", rows)
    assert {(r["asset"], r["part"]) for r in recolour} == {(r["asset"], r["part"]) for r in rows}
    assert {r["run"] for r in rows + recolour} == {"part-teacher"}
    assert all(r["part_color_acc_true_selection"] >= 0.75 for r in recolour), recolour
    again, _ = generated_selection_table(assets, path, "part-teacher")
    assert again == rows and len(path.read_text().splitlines()) == len(rows)
    assert editing.mean(r["iou"] for r in rows) is not None
