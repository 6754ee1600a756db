"""Many runs from one prompts file, on Ray (a local instance or a cluster) or in this process.

`read_prompts(path, out)` turns a prompts file into runs: a `.txt` file has one prompt a line (blank
lines and lines starting with `#` are skipped); a `.jsonl` file has one JSON object a line, with a
"prompt" and any config fields to override, as dotted paths (`"sds.guidance_scale": 30`) or whole
sections, each checked like a `--set` value. Every line is checked, and so is any run folder it
would continue, before a run starts; the first problem is an InputError naming the line.

`run_batch(items, out)` runs them, `workers` at a time with `threads` torch threads each, and writes
into `out`:
    <run>/              one run folder per line (the layout of `sds3d.generate`), plus eval.json
    batch.jsonl         one record per line, in file order: status (done | skipped | failed |
                        pending), seconds, steps, the step it resumed from, evaluator scores (for
                        micro-world prompts) and the asset's path relative to `out`
    contact_sheet.png   each run's front view, captioned with its line and prompt

A run whose folder holds its finished result is skipped; an interrupted one continues from its
checkpoint. On Ray each run is a task that Ray retries (up to RETRIES times) when its worker process
dies, and the retry continues from the checkpoint; since a resumed run ends bit for bit where an
uninterrupted one would, a killed worker does not change the assets. Runs on the same number of
threads give the same assets; a different thread count changes them in the last bits.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError, first_line

if TYPE_CHECKING:
    from .generate import GenerateConfig

RETRIES = 3  # Ray re-runs a task this many times when its worker process dies
EXTRA = "pip install 'sds3d[batch]'"
TILE = 128  # contact sheet tile size in pixels, caption excluded


@dataclass
class BatchItem:
    """One line of a prompts file: its 1-based line number, run folder name and resolved config."""

    line: int
    name: str
    config: GenerateConfig


def read_prompts(path: str | Path, out: str | Path, base=None) -> list[BatchItem]:
    """The runs a prompts file asks for, each config `base` (default GenerateConfig()) with the
    line's prompt and fields, writing to `out/<prompt as a folder name>` (`-2`, `-3`, ... for repeats).
    InputError "<file> line N: ..." for a bad line or a run folder it cannot continue."""
    from .generate import GenerateConfig

    path, out = Path(path), Path(out).absolute()
    if path.suffix.lower() not in (".txt", ".jsonl"):
        raise InputError(f"{path}: give a .txt file (one prompt a line) or a .jsonl file (one JSON object a line)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such prompts file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the prompts file ({first_line(error)})") from None
    base = base if base is not None else GenerateConfig()
    items, names = [], {}
    for number, text in enumerate(lines, start=1):
        text = text.strip()
        if not text or (path.suffix.lower() == ".txt" and text.startswith("#")):
            continue
        try:
            config = _line_config(base, text, path.suffix.lower() == ".jsonl")
            name = _run_name(config.prompt, names)
            config = replace(config, out=str(out / name), init_from=_absolute(config.init_from),
                             prior=_absolute(config.prior),
                             retrieval=replace(config.retrieval, library=_absolute(config.retrieval.library)))
            _check_run(config)
        except InputError as error:
            raise InputError(f"{path} line {number}: {first_line(error)}") from None
        items.append(BatchItem(number, name, config))
    if not items:
        raise InputError(f"{path}: no prompts (every line is empty or a # comment)")
    return items


def _line_config(base, text: str, jsonl: bool):
    """`base` with one line's prompt and, for JSONL, its fields; checked as a whole (validate_config)."""
    from .config import set_field
    from .prompts import validate_prompt
    from .validation import validate_config

    fields = {"prompt": text}
    if jsonl:
        try:
            fields = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as error:
            raise InputError(f"not JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(fields, dict):
            raise InputError(f"must be a JSON object such as {{\"prompt\": \"a red mug\", \"seed\": 1}}, "
                             f"got {type(fields).__name__}")
        if "prompt" not in fields:
            raise InputError("has no \"prompt\"")
        if "out" in fields:
            raise InputError("sets \"out\"; a batch names each run folder itself (--out DIR/<prompt>)")
    config = base
    for key, value in fields.items():
        config = set_field(config, key, value)
    validate_config(config)
    try:
        return replace(config, prompt=validate_prompt(config.prompt))
    except ValueError as error:
        raise InputError(first_line(error)) from None


def _no_constant(name: str):
    raise InputError(f"{name} is not a number a config may hold")


def _run_name(prompt: str, taken: dict[str, int]) -> str:
    """The prompt as a folder name; the n-th repeat of a name gets `-n`."""
    from .prompts import slug

    name = slug(prompt)
    taken[name] = taken.get(name, 0) + 1
    return name if taken[name] == 1 else f"{name}-{taken[name]}"


def _absolute(spec: str) -> str:
    """An existing local path made absolute (workers may start elsewhere); anything else as it is."""
    return str(Path(spec).expanduser().absolute()) if spec and Path(spec).expanduser().exists() else spec


def _check_run(config) -> None:
    """A run folder that already holds a checkpoint must be one this config may continue."""
    from .generate import particle_count
    from .validation import check_resume, check_writable

    if (Path(config.out) / "checkpoint.pt").is_file():
        check_resume(config, particle_count(config))
    check_writable(Path(config.out))


def finished(config) -> dict | None:
    """metrics.json of the finished run of exactly `config` in `config.out`, else None."""
    from .config import load_json
    from .generate import GenerateConfig

    out = Path(config.out)
    if not (out / "metrics.json").is_file() or not (out / "config.json").is_file():
        return None
    saved = load_json(GenerateConfig, out / "config.json")
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics if replace(saved, out=config.out) == config and metrics.get("steps") == config.steps else None


def run_one(config, threads: int, prior=None) -> dict:
    """One run (continued from its checkpoint, or only scored when finished) on `threads` torch
    threads, then evaluator scores into eval.json; -> its manifest fields. Never raises for a run that
    fails: the record says "failed" and why."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    out, resumed_from = Path(config.out), 0
    try:
        resumed_from = _checkpoint_step(out / "checkpoint.pt")
        metrics = finished(config)
        status = "skipped" if metrics is not None else "done"
        if metrics is None:
            metrics, representation = _generate(config, prior)
        else:
            from .generate import load_run

            representation = load_run(out)[1]
        scores = _score(representation, config.prompt)
        (out / "eval.json").write_text(json.dumps(scores, indent=2))
    except Exception as error:  # noqa: BLE001 (one run's failure is recorded; the batch goes on)
        message = first_line(error)
        return {"status": "failed", "resumed_from": resumed_from,
                "error": message if isinstance(error, InputError) else f"{type(error).__name__}: {message}"}
    finally:
        torch.set_num_threads(previous)
    return {"status": status, "seconds": metrics["seconds"], "steps": metrics["steps"], "resumed_from": resumed_from,
            "scores": scores, "asset": f"{out.name}/{metrics['asset']}"}


def _checkpoint_step(path: Path) -> int:
    """The step a run would continue from (0 without a checkpoint)."""
    from .errors import load_checkpoint

    return int(load_checkpoint(path).get("step", 0)) if path.is_file() else 0


def _generate(config, prior) -> tuple[dict, object]:
    from .generate import generate
    from .scope import OutsideWorldWarning

    with warnings.catch_warnings():  # the batch printed each prompt's note before starting
        warnings.simplefilter("ignore", OutsideWorldWarning)
        result = generate(config, prior=prior if prior is not None else _prior(config.prior, config.device),
                          resume=True, progress=False)
    return result.metrics, result.representation


@functools.lru_cache(maxsize=None)
def _prior(spec: str, device: str):
    """A prior loaded once per process (a Ray worker keeps it across its tasks); runs share it read-only."""
    from sds3d.guidance.registry import load_prior
    from .monitor import quiet

    quiet()
    return load_prior(spec, device)


@functools.lru_cache(maxsize=None)
def _evaluator():
    from .world.evaluator import Evaluator

    return Evaluator.load()


def _score(representation, prompt: str) -> dict:
    """evaluate_asset's scores for a micro-world prompt; {} for any other."""
    from .evaluate import evaluate_asset
    from .world import parse_prompt

    return evaluate_asset(representation, prompt, _evaluator()) if parse_prompt(prompt) is not None else {}


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def run_batch(items: list[BatchItem], out: str | Path, workers: int = 1, threads: int = 1, address: str | None = None,
              use_ray: bool | None = None, progress: bool = True, prior=None) -> list[dict]:
    """Runs every item (see the module docstring); -> the manifest records, in file order.
    `use_ray` None: on Ray when it is installed (a local instance, or the cluster at `address`), else
    in this process (one worker only). `prior`: a loaded prior shared by in-process runs (tests,
    notebooks). Ray retries a run whose worker dies; a run that still fails is recorded as "failed"."""
    from tqdm.auto import tqdm

    if workers < 1 or threads < 1:
        raise InputError(f"--workers and --threads-per-run must be at least 1, got {workers} and {threads}")
    use_ray = ray_available() if use_ray is None else use_ray
    if (workers > 1 or address) and not use_ray:
        raise InputError(f"{'--address' if address else f'--workers {workers}'} needs Ray: {EXTRA} (or run with "
                         f"--workers 1, in this process)")
    if use_ray and prior is not None:
        raise InputError("a loaded prior can only be shared in this process; Ray workers load config.prior themselves")
    if use_ray and address:
        _check_reachable(address)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = {item.line: {"line": item.line, "prompt": item.config.prompt, "run": item.name, "status": "pending"}
               for item in items}
    todo = []
    for item in items:
        record = _finished_record(item)
        if record is None:
            todo.append(item)
        else:
            records[item.line] |= record
    write_manifest(records, out)
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc="prompts", unit="run", disable=not progress,
               dynamic_ncols=True)
    results = (_ray_results(todo, workers, threads, address) if use_ray else
               ((item, run_one(item.config, threads, prior)) for item in todo))
    try:
        with contextlib.closing(results):  # ends Ray even when the driver stops early
            for item, record in results:
                records[item.line] |= record
                if record["status"] != "failed" and not Path(item.config.out).is_dir():
                    raise InputError(f"{item.config.out} does not exist on this machine; on a cluster --out must "
                                     f"be a folder every node shares")
                write_manifest(records, out)
                bar.update(1)
    finally:
        bar.close()
        contact_sheet([records[item.line] for item in items], out)
    return [records[item.line] for item in items]


def _finished_record(item: BatchItem) -> dict | None:
    """The manifest fields of a run finished and scored by an earlier batch (status "skipped"), else None."""
    metrics, scores = finished(item.config), Path(item.config.out) / "eval.json"
    if metrics is None or not scores.is_file():
        return None
    return {"status": "skipped", "seconds": metrics["seconds"], "steps": metrics["steps"],
            "resumed_from": metrics["steps"], "scores": json.loads(scores.read_text()),
            "asset": f"{item.name}/{metrics['asset']}"}


def _ray_results(items: list[BatchItem], workers: int, threads: int, address: str | None):
    """(item, record) as Ray finishes them, `workers` runs in flight; a local Ray instance sized to
    workers x threads CPUs, or the cluster at `address`."""
    import logging

    import ray

    if not items:
        return
    started = not ray.is_initialized()  # a caller's own Ray session is used, and left running
    if started:
        where = {"address": address} if address else {"num_cpus": workers * threads, "include_dashboard": False}
        try:
            ray.init(**where, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise InputError(f"cannot start Ray{f' at {address}' if address else ''}: {first_line(error)}") from None
    try:
        task = ray.remote(run_one).options(num_cpus=threads, max_retries=RETRIES)
        waiting, running = list(items), {}
        while waiting or running:
            while waiting and len(running) < workers:
                item = waiting.pop(0)
                running[task.remote(item.config, threads)] = item
            (ready,), _ = ray.wait(list(running), num_returns=1)
            item = running.pop(ready)
            try:
                record = ray.get(ready)
            except ray.exceptions.RayError as error:  # e.g. its worker died on every retry
                record = {"status": "failed", "error": f"{type(error).__name__}: {first_line(error)[:200]}"}
            yield item, record
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address: str, seconds: float = 10.0) -> None:
    """A `host:port` or `ray://host:port` address must accept a connection (Ray itself would wait for
    minutes); InputError otherwise. Other forms ("auto") are left to Ray."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as error:
        raise InputError(f"cannot reach Ray at {address}: {error.strerror or error}; start it there with "
                         f"`ray start --head` or check --address") from None


def write_manifest(records: dict[int, dict], out: Path) -> Path:
    """batch.jsonl: one JSON record a line, by line number (written atomically)."""
    path = out / "batch.jsonl"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(records[line]) + "\n" for line in sorted(records)))
    os.replace(tmp, path)
    return path


def contact_sheet(records: list[dict], out: Path) -> Path:
    """contact_sheet.png: each run's front view (the first tile of its preview.png), captioned with its
    line number and prompt; a grey tile with the status for a run without one."""
    from PIL import Image, ImageDraw

    caption = 14
    columns = math.ceil(math.sqrt(len(records)))
    rows = -(-len(records) // columns)
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, record in enumerate(records):
        x, y = (index % columns) * TILE, (index // columns) * (TILE + caption)
        preview = out / record["run"] / "preview.png"
        if record["status"] in ("done", "skipped") and preview.is_file():
            with Image.open(preview) as grid:
                side = grid.width // 4  # preview.png is 4 frames a row, the front view first
                sheet.paste(grid.convert("RGB").crop((0, 0, side, side)).resize((TILE, TILE)), (x, y))
        else:
            draw.rectangle((x, y, x + TILE - 1, y + TILE - 1), fill=(200, 200, 200))
            draw.text((x + 4, y + TILE // 2 - 6), record["status"], fill="black")
        draw.text((x + 2, y + TILE + 1), f"{record['line']}: {record['prompt']}"[:21], fill="black")
    path = out / "contact_sheet.png"
    sheet.save(path)
    return path


def print_notes(items: list[BatchItem]) -> None:
    """The one-line note for each prompt outside what the embedded prior knows."""
    from .scope import scope_note

    for item in items:
        note = scope_note(item.config.prompt, item.config.prior)
        if note:
            print(f"sds3d: note: line {item.line}: {note}", file=sys.stderr)


def summary(records: list[dict], seconds: float) -> dict:
    """Counts by status and the batch's wall time."""
    counts = {status: sum(r["status"] == status for r in records) for status in ("done", "skipped", "failed")}
    return {"prompts": len(records), **counts, "seconds": round(seconds, 2)}


def default_threads(workers: int) -> int:
    """This machine's cores shared by the workers (at least 1 thread each)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))

