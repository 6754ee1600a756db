"""The guidance table's bar verdicts (benchmarks/guidance_table.py): kind accuracy within 15 points of
SDS's on complete rows only, and DSD's diversity against SDS's."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from guidance_table import bar_text, bar_verdicts  # noqa: E402


def row(name, prompts, kind_acc, diversity=None):
    return {"guidance": name, "prompts": prompts, "kind_acc": kind_acc, "diversity": diversity}


def test_complete_rows_are_judged_against_sds_minus_15_points():
    rows = [row("sds", 28, 0.98, 0.10), row("vsd", 28, 0.83), row("cds", 28, 0.829), row("edge", 28, 0.83),
            row("ism", 3, 0.20), row("dsd", 9, 0.40, 0.28)]
    verdicts = bar_verdicts(rows, 28)
    assert verdicts["kind_acc_bar"] == pytest.approx(0.83)
    assert verdicts["met"] == ["sds", "vsd", "edge"]
    assert verdicts["not_met"] == ["cds"]
    assert verdicts["incomplete"] == ["ism", "dsd"]
    assert verdicts["dsd_more_diverse_than_sds"] is True
    text = bar_text(verdicts)
    assert "0.830" in text and "not met by cds" in text and "incomplete: ism, dsd" in text


def test_no_bar_without_a_complete_sds_row():
    for rows in ([row("vsd", 28, 0.9)], [row("sds", 27, 0.98), row("vsd", 28, 0.9)]):
        verdicts = bar_verdicts(rows, 28)
        assert verdicts["kind_acc_bar"] is None and verdicts["met"] == [] and verdicts["not_met"] == []
        assert bar_text(verdicts).startswith("Bar: needs a complete SDS row")


def test_dsd_diversity_below_sds_is_reported_false():
    verdicts = bar_verdicts([row("sds", 28, 0.98, 0.10), row("dsd", 28, 0.9, 0.05)], 28)
    assert verdicts["dsd_more_diverse_than_sds"] is False and verdicts["met"] == ["sds", "dsd"]
