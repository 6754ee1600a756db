"""Where a step's time goes: the generation loop profiled phase by phase, the prior's UNet against
this machine's matmul rate, and each speed-up measured on its own against today's defaults.

    python benchmarks/step_profile.py             # 600-step runs of the presets baseline and fast
    python benchmarks/step_profile.py --steps 100 --threads 2
    python benchmarks/step_profile.py --parallel  # one 2-thread run against two 1-thread runs at once

Two loop runs of "a red mug" in this process, `--preset baseline` (the settings every speed-up is
measured against: the prior in fp32 on torch's intra-op threads) and `--preset fast` (its UNet under
bf16 autocast where the CPU has native bf16, and with more than one thread its batch in slices on
worker threads, `prior_batch_threads`), each timed per phase after `--warmup` steps: prior (its UNet apart), render,
backward, optimiser, densification (Gaussians' statistics and growth, taken out of render and
optimiser) and other (the loop's own work: progress bar, metrics.csv, checkpoints, previews). The
UNet alone is timed on the loop's batch (views x 2 for classifier-free guidance) in fp32, under bf16
autocast (only where the CPU has native bf16), channels-last and in batch slices, alternating; its FLOPs per call come from `torch.utils.flop_counter`
(convolutions, matrix products and attention), and its GFLOP/s are set against torch.mm's rate on
1024x1024 matrices in fp32 and bf16 on the same threads. Both report their fastest single call
(UNet: over `--repeats` alternating rounds of 3 calls), which tracks what the machine can do when it
is shared. `text_encodings` counts the text-encoder calls of each run (the prompt cache should make
it a handful).

`--parallel` times short runs in subprocesses instead: one with 2 threads, then two with 1 thread
side by side, and reports steps per second of the whole machine for both, over each process's wall
time (start-up, prior loading and asset writing included) and over the loop alone (metrics.json).

The last line is JSON: seconds_per_step (fast), baseline_seconds_per_step, speedup, unet_gflops
(achieved, fast), unet_gflops_fp32 / _bf16, unet_gflop_per_call, matmul_gflops_fp32 / _bf16,
peak_rss_mb (this process), breakdown (fast, seconds per step by phase) and every variant's numbers.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

PROMPT = "a red mug"
LOOP_PHASES = ("render", "prior", "backward", "optimizer")


def matmul_gflops(dtype: torch.dtype, size: int = 1024, repeats: int = 40) -> float:
    """torch.mm's best rate on size x size matrices (GFLOP/s), over `repeats` single products."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def unet_inputs(prior, views: int):
    """The loop's UNet batch: `views` renders twice (conditional and unconditional)."""
    from sds3d.guidance.priors.prior import TextEmbedding

    batch = 2 * views
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, prior.latent_channels, prior.resolution, prior.resolution, generator=g)
    t = torch.randint(20, 980, (batch,), generator=g)
    text = prior.encode_prompts([PROMPT] * views + [""] * views)
    return x, t, TextEmbedding(text.hidden)


def unet_flops(prior, views: int) -> int:
    """FLOPs of one UNet call on the loop's batch; the CPU's flash attention, which torch's counter
    leaves out, is counted with torch's formula for the other attention kernels."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def attention(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention}
    x, t, text = unet_inputs(prior, views)
    batch_threads, prior.batch_threads = prior.batch_threads, False  # the counter sees this thread only
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter, torch.no_grad():
        prior.unet_output(x, t, text)
    prior.batch_threads = batch_threads
    return counter.get_total_flops()


@contextlib.contextmanager
def channels_last(prior):
    prior.unet.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        prior.unet.to(memory_format=torch.contiguous_format)


def unet_microbenchmark(prior, views: int, repeats: int) -> dict[str, float]:
    """Best seconds per UNet call of each variant, measured in alternating rounds."""
    from sds3d.hardware import fast_bf16

    x, t, text = unet_inputs(prior, views)
    batch_threads = prior.batch_threads
    variants = {"fp32": ("fp32", False, False), "fp32_channels_last": ("fp32", True, False),
                "fp32_batch_threads": ("fp32", False, True)}
    if fast_bf16():  # emulated bf16 is many times slower: not worth timing
        variants |= {"bf16": ("bf16", False, False), "bf16_channels_last": ("bf16", True, False),
                     "bf16_batch_threads": ("bf16", False, True)}
    best = dict.fromkeys(variants, float("inf"))
    with torch.no_grad():
        for _ in range(repeats):
            for name, (precision, last, threads) in variants.items():
                prior.set_precision(precision)
                prior.batch_threads = threads
                with channels_last(prior) if last else contextlib.nullcontext():
                    inputs = x.contiguous(memory_format=torch.channels_last) if last else x
                    prior.unet_output(inputs, t, text)
                    for _ in range(3):
                        start = time.perf_counter()
                        prior.unet_output(inputs, t, text)
                        best[name] = min(best[name], time.perf_counter() - start)
    prior.set_precision("fp32")
    prior.batch_threads = batch_threads
    return best


class Recorder:
    """Per-step snapshots of the loop's phase timer, and the time spent in the UNet and in densification."""

    def __init__(self, prior):
        self.unet_seconds, self.unet_images = 0.0, 0
        self.densify_seconds = {"before_backward": 0.0, "after_step": 0.0}  # in the render / optimizer phases
        self.snapshots: list[tuple[float, dict, float, int, dict]] = []
        self.timer = None
        self.encodings = 0
        self._start, self._running, self._lock = None, 0, threading.Lock()
        self.hooks = [prior.unet.register_forward_pre_hook(self._unet_start),
                      prior.unet.register_forward_hook(self._unet_end)]

    def _unet_start(self, module, args):  # slices of one call run at once on worker threads: time their union
        with self._lock:
            if self._running == 0:
                self._start = time.perf_counter()
            self._running += 1

    def _unet_end(self, module, args, output):
        with self._lock:
            self._running -= 1
            self.unet_images += args[0].shape[0]
            if self._running == 0:
                self.unet_seconds += time.perf_counter() - self._start

    def callback(self, step, logs, output):
        self.snapshots.append((time.perf_counter(), dict(self.timer.totals), self.unet_seconds, self.unet_images,
                               dict(self.densify_seconds)))


@contextlib.contextmanager
def instrumented(recorder: Recorder, prior):
    """Loop timer captured, Gaussians' densification timed, text-encoder calls counted (restored after)."""
    import importlib

    from sds3d.representations.gaussians import Gaussians

    generate_module = importlib.import_module("sds3d.generate")  # the module (the package exports the function)

    timer_class, encode = generate_module.Timer, prior._encode_uncached
    originals = {name: getattr(Gaussians, name) for name in ("before_backward", "after_step")}

    class CapturedTimer(timer_class):
        def __init__(self):
            super().__init__()
            recorder.timer = self

    def timed(name, method):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                recorder.densify_seconds[name] += time.perf_counter() - start
        return wrapper

    def counted(prompts):
        recorder.encodings += 1
        return encode(prompts)

    generate_module.Timer = CapturedTimer
    prior._encode_uncached = counted
    for name, method in originals.items():
        setattr(Gaussians, name, timed(name, method))
    try:
        yield
    finally:
        for hook in recorder.hooks:
            hook.remove()
        generate_module.Timer = timer_class
        del prior._encode_uncached
        for name, method in originals.items():
            setattr(Gaussians, name, method)


def profile_run(arm: str, prior, steps: int, warmup: int, out: Path, flops_per_image: float) -> dict:
    """One generate() run of `arm` (a preset on top of `v1`, the recipe of the prior profiled); seconds per
    step by phase after `warmup`."""
    from sds3d.generate import generate
    from sds3d.presets import arm_config

    config = dataclasses.replace(arm_config(v1_config(), arm), steps=steps, out=str(out))
    prior.clear_prompt_cache()
    recorder = Recorder(prior)
    with instrumented(recorder, prior):
        result = generate(config, prior=prior, progress=False, callback=recorder.callback)
    (t0, phases0, unet0, images0, dens0), (t1, phases1, unet1, images1, dens1) = (recorder.snapshots[warmup - 1],
                                                                                 recorder.snapshots[-1])
    n = len(recorder.snapshots) - warmup
    phase = {name: (phases1.get(name, 0.0) - phases0.get(name, 0.0)) / n for name in LOOP_PHASES}
    wall, unet = (t1 - t0) / n, (unet1 - unet0) / n
    densify = {name: (dens1[name] - dens0[name]) / n for name in dens1}
    breakdown = {"prior_unet": unet, "prior_other": phase["prior"] - unet,
                 "render": phase["render"] - densify["before_backward"], "backward": phase["backward"],
                 "optimizer": phase["optimizer"] - densify["after_step"], "densification": sum(densify.values()),
                 "other": wall - sum(phase.values())}
    return {"arm": arm, "prior_precision": config.prior_precision,
            "autocast": str(prior.autocast_dtype).replace("torch.", "") if prior.autocast_dtype else "none",
            "seconds_per_step": wall, "breakdown": {k: round(v, 5) for k, v in breakdown.items()},
            "breakdown_share": {k: round(v / wall, 3) for k, v in breakdown.items()},
            "unet_gflops_in_loop": (images1 - images0) * flops_per_image / max(unet1 - unet0, 1e-12) / 1e9,
            "text_encodings": recorder.encodings, "gaussians": result.representation.stats().get("gaussians"),
            "steps_timed": n}


def v1_config():
    """The config the arms start from: the `v1` preset, whose prior (the text-only v1) is the one profiled."""
    from sds3d.generate import GenerateConfig
    from sds3d.presets import apply_preset

    return apply_preset(GenerateConfig(prompt=PROMPT), "v1")


def parallel_runs(steps: int) -> dict:
    """Steps per second of the machine: one 2-thread run, then two 1-thread runs side by side."""
    def command(threads: int, out: str) -> list[str]:
        code = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); from sds3d.cli import main; "
                "sys.exit(main(sys.argv[2:]))")
        return [sys.executable, "-c", code, str(threads), "generate", PROMPT, "--steps", str(steps), "--out", out,
                "--quiet", "--set", "turntable_frames=1", "--set", "preview_every=0"]

    def run(jobs: list[list[str]]) -> float:
        start = time.perf_counter()
        processes = [subprocess.Popen(job, stdout=subprocess.DEVNULL) for job in jobs]
        if any(process.wait() != 0 for process in processes):
            raise SystemExit("a generate run failed")
        return time.perf_counter() - start

    def loop_steps_per_s(out: str) -> float:  # the loop alone, from the run's metrics.json
        return 1 / json.loads((Path(out) / "metrics.json").read_text())["seconds_per_step"]

    with tempfile.TemporaryDirectory() as tmp:
        run([command(1, f"{tmp}/warm")])  # kernels built and files cached before timing
        one = run([command(2, f"{tmp}/two_threads")])
        two = run([command(1, f"{tmp}/a"), command(1, f"{tmp}/b")])
        loop_one = loop_steps_per_s(f"{tmp}/two_threads")
        loop_two = loop_steps_per_s(f"{tmp}/a") + loop_steps_per_s(f"{tmp}/b")
    return {"steps": steps, "one_run_2_threads_steps_per_s": round(steps / one, 3),
            "two_runs_1_thread_steps_per_s": round(2 * steps / two, 3), "throughput_ratio": round(one * 2 / two, 3),
            "loop_one_run_2_threads_steps_per_s": round(loop_one, 3),
            "loop_two_runs_1_thread_steps_per_s": round(loop_two, 3),
            "loop_throughput_ratio": round(loop_two / loop_one, 3),
            "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the per-step numbers")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10, help="alternating rounds of the UNet microbenchmark")
    parser.add_argument("--parallel", action="store_true", help="one 2-thread run against two 1-thread runs")
    args = parser.parse_args()
    if args.parallel:
        print(json.dumps(parallel_runs(args.steps)))
        return
    torch.set_num_threads(args.threads)

    from sds3d.guidance.registry import load_prior
    from sds3d.hardware import fast_bf16

    prior = load_prior(v1_config().prior, "cpu")
    views = v1_config().views_per_step
    flops = unet_flops(prior, views)
    micro = unet_microbenchmark(prior, views, args.repeats)
    rates = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {arm: profile_run(arm, prior, args.steps, args.warmup, Path(tmp) / arm, flops / (2 * views))
                for arm in ("baseline", "fast")}
    base, fast = runs["baseline"], runs["fast"]
    unet = {name: flops / seconds / 1e9 for name, seconds in micro.items()}
    result = {
        "seconds_per_step": round(fast["seconds_per_step"], 4),
        "baseline_seconds_per_step": round(base["seconds_per_step"], 4),
        "speedup": round(base["seconds_per_step"] / fast["seconds_per_step"], 3),
        "unet_gflop_per_call": round(flops / 1e9, 3), "unet_batch": 2 * views,
        "unet_gflops": round(fast["unet_gflops_in_loop"], 1),
        "unet_gflops_fp32": round(unet["fp32"], 1), "unet_gflops_bf16": round(unet["bf16"], 1) if "bf16" in unet else None,
        "unet_seconds_per_call": {name: round(seconds, 4) for name, seconds in micro.items()},
        "unet_speedup_over_fp32": {name: round(micro["fp32"] / seconds, 3) for name, seconds in micro.items()},
        "matmul_gflops_fp32": round(rates["fp32"], 1), "matmul_gflops_bf16": round(rates["bf16"], 1),
        "unet_fraction_of_matmul_fp32": round(unet["fp32"] / rates["fp32"], 3),
        "unet_fraction_of_matmul_bf16": round(unet["bf16"] / rates["bf16"], 3) if "bf16" in unet else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "breakdown": fast["breakdown"], "runs": runs,
        "threads": args.threads, "steps": args.steps, "fast_bf16_cpu": fast_bf16(),
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
