"""Opening a run directory never runs code: a checkpoint whose pickle asks for a function is refused
with one line by every reader (render, export, eval, --resume, --init-from, load_checkpoint)."""

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from test_bad_input import finished, one_line_error  # noqa: F401  (fixture)

from sds3d.cli import main
from sds3d.errors import InputError, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


class Payload:
    """Unpickling this touches `marker`: the harmless stand-in for any code a checkpoint could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def plant(run: Path, marker: Path, legacy: bool = False) -> None:
    """Hides the payload in the run's otherwise valid checkpoint (zip format, or a plain pickle)."""
    if legacy:
        (run / "checkpoint.pt").write_bytes(pickle.dumps({"step": 1, "timings": {"render": Payload(marker)}}))
        return
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["timings"] = {"render": Payload(marker)}
    torch.save(state, run / "checkpoint.pt")


def test_the_payload_would_run_if_unpickled(finished, tmp_path):  # noqa: F811
    run, marker = shutil.copytree(finished, tmp_path / "run"), tmp_path / "ran"
    plant(run, marker)
    torch.load(run / "checkpoint.pt", weights_only=False)  # what the old loader did
    assert marker.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "pickle"])
@pytest.mark.parametrize("command", ["render", "export", "eval", "resume", "init-from"])
def test_crafted_checkpoint_is_refused_and_never_runs(command, legacy, finished, tmp_path, capsys):  # noqa: F811
    run, marker = shutil.copytree(finished, tmp_path / "run"), tmp_path / "ran"
    plant(run, marker, legacy)
    argv = {"render": ["render", str(run)], "export": ["export", str(run), "--out", str(tmp_path / "a.ply")],
            "eval": ["eval", str(run)], "resume": ["generate", "a red mug", "--out", str(run), "--resume"],
            "init-from": ["generate", "a red mug", "--init-from", str(run), "--out", str(tmp_path / "fine"),
                          "--steps", "1", "--quiet"]}[command]
    err = one_line_error(capsys, main(argv))
    # torch's reader takes a bare pickle for no checkpoint at all; the zip form gets as far as the payload
    assert "not a readable checkpoint" in err if legacy else "refused to load" in err and "could run code" in err
    assert not marker.exists()


def test_load_checkpoint_refuses_numpy_and_reads_plain_data(tmp_path):
    import numpy as np

    torch.save({"array": np.zeros(3)}, tmp_path / "numpy.pt")
    with pytest.raises(InputError, match="refused to load"):
        load_checkpoint(tmp_path / "numpy.pt")
    plain = {"step": 3, "rng": torch.get_rng_state(), "big": 2**100, "names": ["a", ("b", 1.5)], "none": None}
    torch.save(plain, tmp_path / "plain.pt")
    loaded = load_checkpoint(tmp_path / "plain.pt")
    assert loaded["big"] == 2**100 and loaded["names"] == ["a", ("b", 1.5)] and torch.equal(loaded["rng"], plain["rng"])


def test_no_torch_load_reads_files_with_pickle_code():
    """Every torch.load in the repository (but the demonstration above) passes weights_only=True."""
    root = Path(__file__).resolve().parents[1]
    calls = [(path, line) for path in root.rglob("*.py") if ".git" not in path.parts and path.name != "test_safe_load.py"
             for line in path.read_text().splitlines() if "torch.load(" in line and "weights_only=True" not in line]
    assert calls == []
