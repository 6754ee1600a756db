"""Run monitoring and media: metrics.csv as the run goes (no duplicate rows after a resume), loss.png,
TensorBoard, MP4 turntables."""

import numpy as np
import pytest
from PIL import Image
from toy_priors import GaussianToyPrior

from sds3d.export import save_asset
from sds3d.generate import GenerateConfig, generate
from sds3d.monitor import RunMonitor, plot_metrics, read_metrics
from sds3d.run_folder import ReplacedRunWarning
from sds3d.representations import GaussiansConfig
from sds3d.representations.gaussian_densification import DensificationConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(out, steps=4) -> GenerateConfig:
    return GenerateConfig(prompt="a red cube", steps=steps, views_per_step=1, resolution=16, out=str(out),
                          checkpoint_every=2, preview_every=0, turntable_frames=2, turntable_resolution=16,
                          gaussians=GaussiansConfig(num_points=100, densify=DensificationConfig(enabled=False)))


def prior():
    return GaussianToyPrior({}, resolution=16)


def test_a_run_writes_one_row_per_step_and_a_loss_plot(tmp_path):
    seen = []

    def callback(step, logs, output):  # the row of a step is on disk when the step ends
        seen.append(read_metrics(tmp_path / "metrics.csv")[-1]["step"])

    result = generate(tiny_config(tmp_path), prior=prior(), progress=False, callback=callback)
    assert seen == [1, 2, 3, 4]
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert rows[-1]["loss"] == pytest.approx(result.metrics["final_loss"])
    assert rows[-1]["gaussians"] == 100 and 0 < rows[0]["seconds"] < rows[-1]["seconds"]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["step", "seconds", "loss"]
    assert Image.open(tmp_path / "loss.png").size == (640, 360)


def test_a_resumed_run_has_each_step_once(tmp_path):
    def crash(step, logs, output):
        if step == 2:  # step 3 is logged, the last checkpoint is at step 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tiny_config(tmp_path), prior=prior(), progress=False, callback=crash)
    assert [row["step"] for row in read_metrics(tmp_path / "metrics.csv")] == [1, 2, 3]
    generate(tiny_config(tmp_path), prior=prior(), progress=False, resume=True)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert all(earlier["seconds"] < later["seconds"] for earlier, later in zip(rows, rows[1:]))
    with pytest.warns(ReplacedRunWarning):  # a new run in the folder replaces the old one's files
        generate(tiny_config(tmp_path, steps=2), prior=prior(), progress=False)  # and starts a new log
    assert [row["step"] for row in read_metrics(tmp_path / "metrics.csv")] == [1, 2]


def test_a_log_that_appears_later_adds_a_column(tmp_path):
    monitor = RunMonitor(tmp_path)
    monitor.log(1, 0.5, {"loss": 2.0, "note": "not a number", "skipped": True})
    monitor.log(2, 1.0, {"loss": 1.0, "grad_norm": 3.0})
    monitor.close()
    assert read_metrics(tmp_path / "metrics.csv") == [{"step": 1, "seconds": 0.5, "loss": 2.0},
                                                      {"step": 2, "seconds": 1.0, "loss": 1.0, "grad_norm": 3.0}]


def test_loss_plot_draws_the_curve(tmp_path):
    rows = [{"step": s, "seconds": 0.1 * s, "loss": 10.0 / s} for s in range(1, 101)]
    rows[50]["loss"] = float("nan")
    image = np.asarray(Image.open(plot_metrics(rows, tmp_path / "loss.png")))
    top = image[:180]
    blue = (top[..., 2] > 150) & (top[..., 0] < 100)
    columns = np.nonzero(blue.any(axis=0))[0]
    assert columns.min() < 100 and columns.max() > 540  # the moving average spans the steps
    rows_hit = np.nonzero(blue.any(axis=1))[0]
    assert rows_hit.max() - rows_hit.min() > 100  # and falls from near the top to near the bottom


def test_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    generate(tiny_config(tmp_path), prior=prior(), progress=False)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("loss")] == [1, 2, 3, 4]


def test_mp4_turntables(tmp_path, capsys):
    import imageio.v3 as iio

    from sds3d.cli import main

    config = tiny_config(tmp_path, steps=1)
    config.turntable_format = "mp4"
    generate(config, prior=prior(), progress=False)
    assert iio.imread(tmp_path / "turntable.mp4").shape == (2, 16, 16, 3)
    assert not (tmp_path / "turntable.gif").exists()
    assert main(["render", str(tmp_path), "--frames", "3", "--resolution", "32", "--format", "mp4"]) == 0
    assert iio.imread(tmp_path / "turntable_32.mp4").shape == (3, 32, 32, 3)
    assert main(["render", str(tmp_path), "--frames", "3", "--resolution", "32", "--out", str(tmp_path / "t.avi")]) == 2
    assert "not 'avi'" in capsys.readouterr().err
    config.turntable_format = "webm"
    with pytest.raises(ValueError, match="unknown turntable_format 'webm'; choose one of gif, mp4"):
        generate(config, prior=prior(), progress=False)


def test_export_and_the_end_of_run_bake_show_progress(tmp_path, capsys, monkeypatch):
    from sds3d.cli import main
    from sds3d.representations import DMTet, DMTetConfig

    generate(tiny_config(tmp_path, steps=1), prior=prior(), progress=False)
    fast = ["--resolution", "24", "--texture-size", "64", "--max-faces", "500"]
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "a.glb"), *fast]) == 0
    err = capsys.readouterr().err
    assert "export a.glb" in err and "texture bake" in err and "write" in err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "b.glb"), *fast, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    calls = []  # what a NeRF or mesh run ends with, without baking a 1024-texel texture here
    monkeypatch.setattr("sds3d.export.export_textured", lambda *args, **kwargs: calls.append(kwargs))
    save_asset(DMTet(config=DMTetConfig(resolution=8)), tmp_path, progress=True)
    assert calls == [{"progress": True}]
