"""benchmarks/selection.py writes every run's rows into one table: a run replaces its own rows only."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from selection import replace_run  # noqa: E402


def test_a_run_replaces_its_own_rows_and_keeps_the_other_runs(tmp_path):
    path = tmp_path / "cases.jsonl"
    replace_run(path, "oracle", [{"run": "oracle", "part": "cap"}, {"run": "oracle", "part": "stem"}])
    replace_run(path, "teacher", [{"run": "teacher", "part": "cap"}])
    replace_run(path, "oracle", [{"run": "oracle", "part": "body"}])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"run": "teacher", "part": "cap"}, {"run": "oracle", "part": "body"}]
