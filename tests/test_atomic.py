"""Atomic writes leave the old file whole when the write fails."""

import json

import pytest
import torch

from sds3d.atomic import atomic_torch_save, atomic_write, atomic_write_json, replace_folder


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


def test_replace_folder_swaps_in_the_new_export_and_removes_the_old_one(tmp_path):
    dest, tmp = tmp_path / "export", tmp_path / "export.tmp"
    dest.mkdir()
    (dest / "stale.bin").write_text("old")
    (tmp / "sub").mkdir(parents=True)
    (tmp / "sub" / "weights.bin").write_text("new")
    (tmp / "sub" / "weights.bin").chmod(0o600)
    replace_folder(tmp, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["sub", "sub/weights.bin"]
    assert (dest / "sub" / "weights.bin").read_text() == "new"
    assert (dest / "sub" / "weights.bin").stat().st_mode & 0o777 == 0o644
    assert (dest / "sub").stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
