"""The web UI under load: several API clients at once against a real server with a concurrency limit
and a bounded queue (benchmarks/web_load.py). Every request finishes or is refused by the full queue
with one line, and every finished asset is byte for byte the one the same request gives alone."""

import socket
import sys
from pathlib import Path

import pytest

pytest.importorskip("gradio")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/

from web_load import benchmark, load, requests, solo  # noqa: E402

from sds3d.app.runner import Runner  # noqa: E402
from sds3d.app.ui import build_ui, serve  # noqa: E402

# prompts outside the micro-world: no evaluator scores to compute, so each run takes about a second
PROMPTS = ["a dragon", "a violin", "a lighthouse", "a teapot"]
REFUSAL = "Queue is full! Please try again."

pytestmark = pytest.mark.filterwarnings("ignore::sds3d.scope.OutsideWorldWarning")  # the library's, in the runs


def check(alone, together, queue_size: int, concurrency: int, steps: int) -> None:
    assert all(got.asset is not None and got.status.startswith(f"**Done: {steps} steps**") for got in alone)
    finished = [user for user, got in enumerate(together) if got.asset is not None]
    refused = [got.refusal for got in together if got.asset is None]
    assert refused == [REFUSAL] * (len(together) - len(finished))  # no errors
    # the queue takes `queue_size` at least; more only once a slot takes one out of it
    assert queue_size <= len(finished) <= queue_size + concurrency
    for user in finished:
        assert together[user].status.startswith(f"**Done: {steps} steps**")
        assert together[user].asset == alone[user].asset  # no cross-talk between simultaneous runs


@pytest.mark.slow  # 7 s: a served UI under three users
def test_three_users_one_slot_one_queue_place(tmp_path):
    runner = Runner(tmp_path / "runs", turntable_frames=4, turntable_resolution=32, slots=1)  # as `sds3d app` does
    demo = build_ui(runner, concurrency=1, queue_size=1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve(demo, "127.0.0.1", port, block=False)
    try:
        asked = requests(3, steps=2, prompts=PROMPTS)
        alone = solo(demo.local_url, asked, tmp_path / "solo")
        together, _ = load(demo.local_url, asked, tmp_path / "load")
    finally:
        demo.close()
    check(alone, together, queue_size=1, concurrency=1, steps=2)


@pytest.mark.slow
def test_eight_users_two_slots_against_the_sds3d_app_command(tmp_path):
    result, alone, together = benchmark(users=8, concurrency=2, queue_size=4, steps=3, workdir=tmp_path,
                                        prompts=PROMPTS)
    check(alone, together, queue_size=4, concurrency=2, steps=3)
    assert result["completed"] + result["refused"] == 8 and result["identical_to_solo"] and not result["errors"]
    # Memory is bounded by the slots, not the users: the solo phase (one run at a time, plus what the
    # first run loads once) adds `solo_peak - idle`; two runs at a time may add at most twice that.
    idle, solo_peak, peak = result["idle_rss_mb"], result["solo_peak_rss_mb"], result["peak_rss_mb"]
    assert peak <= idle + 2 * (solo_peak - idle), result
