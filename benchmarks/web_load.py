"""The web UI under load: many users at once against a real `sds3d app` server.

    python benchmarks/web_load.py [--users 8] [--concurrency 2] [--queue-size 4] [--steps 3]

Starts `python -m sds3d.app` on a free port in a subprocess (its runs in a temporary folder), then
1. solo: each user's request alone, one after the other, through gradio_client;
2. load: every user submits the same request again at the same moment, each from its own client
   session. A request either finishes ("Done") or is refused by the full queue (gradio_client's
   `QueueError`, "Queue is full! Please try again."; the page says "This application is currently
   busy. Please try again."); anything else is an error.
Each user asks for a different micro-world prompt and seed. A finished load run is identical to
solo when its asset.ply is byte for byte the solo run's. Memory is the server process's resident
set (Linux /proc): `idle_rss_mb` once the server listens, `solo_peak_rss_mb` the peak after the
solo runs, `peak_rss_mb` the peak after the load. Prints JSON on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sds3d.app.ui import example_prompts

START_SECONDS = 180  # importing gradio and loading the prior on a busy machine
RUN_SECONDS = 600  # one request, waiting in the queue included


@dataclass
class Outcome:
    """What one user got: `asset` (the downloaded asset.ply's bytes) when the run finished, else the
    one-line `refusal` or `error`."""

    asset: bytes | None = None
    status: str = ""
    refusal: str | None = None
    error: str | None = None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def memory_mb(pid: int) -> dict[str, float]:
    """{"VmRSS": current, "VmHWM": peak} resident set of process `pid` in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


class Server:
    """`python -m sds3d.app` in a subprocess, listening on a free port of 127.0.0.1 once entered."""

    def __init__(self, concurrency: int, queue_size: int, max_steps: int, workdir: Path):
        self.args = ["--concurrency", str(concurrency), "--queue-size", str(queue_size), "--max-steps",
                     str(max_steps), "--runs-dir", str(workdir / "runs")]
        self.log = workdir / "server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Server":
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "GRADIO_ANALYTICS_ENABLED": "False"}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "sds3d.app", "--port", str(self.port), *self.args],
                                            stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.process.returncode}: "
                                   f"{self.log.read_text().strip().splitlines()[-1:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=5):
                    return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"the server did not answer within {START_SECONDS} s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def memory(self) -> dict[str, float]:
        return memory_mb(self.process.pid)


def requests(users: int, steps: int, prompts: list[str] | None = None) -> list[dict]:
    """One request per user: `prompts` (default the micro-world examples) in turn, seed = user index."""
    prompts = prompts or example_prompts()
    return [dict(prompt=prompts[user % len(prompts)], steps=steps, seed=user) for user in range(users)]


def submit(client, request: dict):
    """The page's Generate with `request` over the defaults of the other fields."""
    return client.submit(request["prompt"], "", "gaussians", "sds", "embedded", request["steps"], request["seed"], None,
                         32, 1, api_name="/generate")


def outcome(job) -> Outcome:
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    try:
        status, _, model, *_ = job.result(timeout=RUN_SECONDS)
    except QueueError as error:
        return Outcome(refusal=str(error))
    except AppError as error:
        return Outcome(error=str(error))
    return Outcome(asset=Path(model).read_bytes(), status=status)


def clients(url: str, n: int, downloads: Path) -> list:
    from gradio_client import Client

    return [Client(url, verbose=False, download_files=str(downloads / f"user{i}"), analytics_enabled=False)
            for i in range(n)]


def solo(url: str, asked: list[dict], downloads: Path) -> list[Outcome]:
    """Each request alone, one after the other, each from its own client session."""
    return [outcome(submit(client, request)) for client, request in zip(clients(url, len(asked), downloads), asked)]


def load(url: str, asked: list[dict], downloads: Path) -> tuple[list[Outcome], float]:
    """Every request at once, each from its own client session -> (outcomes, wall seconds)."""
    sessions = clients(url, len(asked), downloads)
    start = time.perf_counter()
    jobs = [submit(client, request) for client, request in zip(sessions, asked)]
    return [outcome(job) for job in jobs], time.perf_counter() - start


def summary(alone: list[Outcome], together: list[Outcome]) -> dict:
    """completed, refused, errors (one line each) and identical_to_solo of the two phases' outcomes."""
    completed = [user for user, got in enumerate(together) if got.asset is not None]
    return dict(completed=len(completed), refused=sum(got.refusal is not None for got in together),
                errors=[got.error for got in alone + together if got.error],
                identical_to_solo=all(together[user].asset == alone[user].asset for user in completed))


def benchmark(users: int = 8, concurrency: int = 2, queue_size: int = 4, steps: int = 3,
              workdir: Path | None = None,
              prompts: list[str] | None = None) -> tuple[dict, list[Outcome], list[Outcome]]:
    """Both phases against a fresh `sds3d app` subprocess -> (summary with timing and memory, solo
    outcomes, load outcomes)."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="sds3d-web-load-"))
    asked = requests(users, steps, prompts)
    with Server(concurrency, queue_size, max_steps=steps, workdir=workdir) as server:
        idle = server.memory()["VmRSS"]
        alone = solo(server.url, asked, workdir / "solo")
        solo_peak = server.memory()["VmHWM"]
        together, seconds = load(server.url, asked, workdir / "load")
        peak = server.memory()["VmHWM"]
    return (dict(users=users, concurrency=concurrency, queue_size=queue_size, steps=steps,
                 **summary(alone, together), seconds=round(seconds, 1), idle_rss_mb=round(idle, 1),
                 solo_peak_rss_mb=round(solo_peak, 1), peak_rss_mb=round(peak, 1)), alone, together)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--queue-size", dest="queue_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    result, alone, together = benchmark(args.users, args.concurrency, args.queue_size, args.steps)
    for user, got in enumerate(together):
        print(json.dumps(dict(user=user, finished=got.asset is not None, message=got.refusal or got.error or got.status,
                              identical_to_solo=got.asset is not None and got.asset == alone[user].asset)))
    print(json.dumps(result))
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
