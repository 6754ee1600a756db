import json
import subprocess
import sys

import pytest

from sds3d.cli import main


def test_demo_writes_asset_and_pictures(tmp_path, capsys):
    assert main(["demo", "--kind", "cube", "--color", "blue", "--points", "2000", "--frames", "4",
                 "--resolution", "32", "--out", str(tmp_path)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["gaussians"] == 2000
    for name in ("turntable.gif", "preview.png", "asset.ply", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("args,message", [
    (["--kind", "dragon"], "unknown kind 'dragon'"),
    (["--color", "mauve"], "unknown colour 'mauve'"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, args, message):
    assert main(["demo", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unwritable_output_dir(capsys):
    assert main(["demo", "--out", "/proc/sds3d"]) == 2  # not creatable, even for root
    assert "cannot write to output directory" in capsys.readouterr().err


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "sds3d", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout
