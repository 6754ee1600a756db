"""benchmarks/feature_teacher.py on a few renders: its JSON line and results file, and that it tells
the shipped teacher from an untrained one."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from feature_teacher import main  # noqa: E402

from sds3d.features.part_teacher import PartTeacher, PartTeacherModel  # noqa: E402
from sds3d.world import KINDS  # noqa: E402

PARTS = {f"{kind}/{part}" for kind, spec in KINDS.items() for part in spec.parts}


@pytest.mark.slow  # 4 s; the shipped teacher IoU is tested in tests/test_feature_teacher.py
def test_benchmark_prints_and_appends_its_result_and_separates_trained_from_untrained(tmp_path, capsys):
    results = tmp_path / "iou.jsonl"
    shipped = main(["--limit", "24", "--results", str(results)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == shipped == json.loads(results.read_text().splitlines()[-1])
    for key in ("mean_iou", "mean_iou_unseen_phrasing", "mean_iou_lerf_relevancy", "mean_iou_kind_known", "seconds"):
        assert 0 <= shipped[key] and (key == "seconds" or shipped[key] <= 1)
    assert shipped["per_part"] and set(shipped["per_part"]) <= PARTS and shipped["images"] == 24
    for ious in shipped["per_part"].values():
        assert set(ious) == {"the_part", "the_kinds_part", "unseen"}

    torch.manual_seed(0)
    PartTeacher(PartTeacherModel()).save(tmp_path / "untrained")
    untrained = main(["--limit", "24", "--results", str(results), "--teacher", str(tmp_path / "untrained")])
    assert len(results.read_text().splitlines()) == 2
    assert shipped["mean_iou"] > untrained["mean_iou"] + 0.2
