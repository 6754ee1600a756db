"""The prior's batch in slices on worker threads (guidance/priors/batch_threads.py)."""

from __future__ import annotations

import threading

import pytest
import torch
from tiny_priors import tiny_embedded_prior

from sds3d.cameras import CAMERA_FEATURES
from sds3d.guidance.priors.batch_threads import batch_chunks, run_in_slices
from sds3d.guidance.priors.prior import TextEmbedding


def test_slices_cover_the_batch_on_workers_of_one_core_without_grad():
    seen = []

    def forward(part: slice) -> torch.Tensor:
        seen.append((part.start, part.stop, threading.current_thread(), torch.get_num_threads(), torch.is_grad_enabled()))
        return torch.arange(10)[part] * 2

    assert torch.equal(run_in_slices(forward, 10, 3), torch.arange(10) * 2)
    assert sorted(s[:2] for s in seen) == [(0, 3), (3, 6), (6, 10)]
    assert all(thread is not threading.current_thread() and threads == 1 and not grad
               for _, _, thread, threads, grad in seen)
    seen.clear()
    run_in_slices(forward, 10, 1)  # one slice: the caller's own thread and grad mode
    assert seen == [(0, 10, threading.current_thread(), torch.get_num_threads(), True)]


def test_threads_started_after_a_split_keep_the_callers_thread_count():
    """Workers set one intra-op thread each; a thread started later (a web UI job) still begins with
    the count the process had, not the workers' 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_in_slices(lambda part: torch.arange(8)[part], 8, 4)  # a pool of 4 workers, started here
        later = []
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert later == [2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_one_slice_per_intra_op_thread_and_at_most_one_per_image():
    assert [batch_chunks(8, 1), batch_chunks(8, 2), batch_chunks(3, 8), batch_chunks(1, 2)] == [1, 2, 3, 1]


@pytest.mark.parametrize("camera", [False, True])
def test_the_prior_split_over_threads_equals_the_whole_batch(camera):
    """unet_output without grad on 2 threads runs two slices (on worker threads) whose outputs are the
    whole batch's; with grad, or with batch_threads off, one call in the caller's thread."""
    prior = tiny_embedded_prior(camera_dim=CAMERA_FEATURES if camera else 0)
    if camera:  # the camera token starts at zero: give it weights so that a mis-sliced camera shows
        for parameter in prior.unet.camera_token.parameters():
            torch.nn.init.normal_(parameter, std=0.5)
    g = torch.Generator().manual_seed(0)
    batch = 5
    x = torch.randn(batch, prior.latent_channels, prior.resolution, prior.resolution, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    hidden = torch.randn(batch, 4, prior.unet.config.cross_attention_dim, generator=g)
    text = TextEmbedding(hidden, camera=torch.randn(batch, CAMERA_FEATURES, generator=g) if camera else None)
    callers = []
    prior.unet.register_forward_pre_hook(lambda module, args: callers.append((threading.current_thread(), len(args[0]))))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            prior.batch_threads = False
            whole = prior.unet_output(x, t, text)
            assert callers == [(threading.current_thread(), batch)]
            callers.clear()
            prior.batch_threads = True
            split = prior.unet_output(x, t, text)
        assert sorted(size for _, size in callers) == [2, 3]
        assert all(thread is not threading.current_thread() for thread, _ in callers)
        torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(whole[0], whole[1])  # the images differ, so a shuffled slice would show
        callers.clear()
        prior.unet_output(x, t, text)  # grad mode on (VSD's LoRA): never split
        assert callers == [(threading.current_thread(), batch)]
    finally:
        torch.set_num_threads(threads)
