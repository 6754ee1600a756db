from sds3d.world.loss_log import truncate_log


def test_rows_past_the_checkpoint_step_are_dropped_and_the_header_kept(tmp_path):
    path = tmp_path / "loss.csv"
    path.write_text("step,loss\n1,0.5\n2,0.4\n3,0.3\n\n")
    truncate_log(path, 2)
    assert path.read_text().splitlines() == ["step,loss", "1,0.5", "2,0.4"]
    assert [p.name for p in tmp_path.iterdir()] == ["loss.csv"]


def test_a_missing_log_stays_missing(tmp_path):
    truncate_log(tmp_path / "loss.csv", 5)
    assert not (tmp_path / "loss.csv").exists()
