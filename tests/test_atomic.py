"""Atomic writes leave the old file whole when the write fails."""

import json

import pytest
import torch

from sds3d.atomic import atomic_torch_save, atomic_write, atomic_write_json


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_json({"step": 1}, path)

    def crash(temporary):
        temporary.write_text('{"step": 2, "half')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_torch_save_round_trips(tmp_path):
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "ck.pt")
    assert torch.equal(torch.load(tmp_path / "ck.pt", weights_only=True)["w"], torch.arange(3))
