"""Every code block of README.md runs, so that no snippet can rot.

Bash blocks run line by line in one scratch folder per test session, each `sds3d ...` command through
`sds3d.cli.main` (what the console script calls) exactly as written, with flags appended that make it
quick (`SHORTER`: argparse keeps the last value, and `--set` comes after every other setting). Model
folders the README names by placeholder are tiny random pipelines. `sds3d app` runs as a server
process until it answers. Install lines are checked against pyproject.toml and the test command
against .ci/run; neither is run. Python blocks run with `generate` shortened the same way. After each
command, the files it says it wrote (and its `--out`) must exist; after each python block, every
path it names.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

import sds3d
from sds3d.cli import main
from sds3d.config import apply_override
from sds3d.generate import generate

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, re.S | re.M)

GENERATE_SETTINGS = ("steps=2", "resolution=16", "views_per_step=1", "preview_every=1", "turntable_frames=2",
                     "turntable_resolution=16", "gaussians.num_points=200", "nerf.samples_per_ray=16",
                     "mesh.resolution=8", "retrieval.adaptation.steps=2", "retrieval.adaptation.views_per_asset=2")
SHORTER = {
    "generate": [arg for setting in GENERATE_SETTINGS for arg in ("--set", setting)],
    "render": ["--frames", "2", "--resolution", "32"],
    "export": ["--resolution", "24", "--texture-size", "64", "--max-faces", "500"],
    "sample": ["--n", "1", "--steps", "2", "--zoom", "1"],
    "demo": ["--points", "500", "--frames", "2", "--resolution", "32"],
    "fit": ["--steps", "150", "--quiet"],
    "distill-features": ["--steps", "2", "--views", "8", "--resolution", "64", "--quiet"],
    "edit": ["--steps", "2", "--quiet"],
    "library make-microworld": ["--kinds", "chair,mug", "--quiet"],
}
# `python -m MODULE` lines of the README (the same idea)
SHORTER_MODULES = {"sds3d.world.capture": ["--views", "16", "--holdout", "2", "--resolution", "64"]}
# blocks that take more than ~10 s, by a line they hold (each must still be in the README)
SLOW = {
    'sds3d generate "a blue car" --guidance vsd': "trains 9 runs (VSD, particles, NeRF, DMTet) and bakes textures",
    "sds3d fit mug_capture": "fits a capture, distils features, edits twice and builds a library",
    "load_with_features(": "edits the capture the slow editing block fits",
    "sds3d app": "starts the web server (gradio, the prior) and waits for it",
    "export_textured(dmtet": "bakes a 1024-texel texture",
}


def block_id(block) -> str:
    language, code = block
    return f"{language}:{code.strip().splitlines()[0][:40]}"


def marks(block):
    return [pytest.mark.slow] if any(line in block[1] for line in SLOW) else []


def test_the_readme_has_code_blocks_and_every_slow_one_is_there():
    assert len(BLOCKS) >= 6 and {language for language, _ in BLOCKS} == {"bash", "python"}
    for line in SLOW:
        assert sum(line in code for _, code in BLOCKS) == 1, f"{line!r} is no longer in exactly one README block"


def test_every_picture_and_linked_file_exists():
    for target in re.findall(r"\]\(([^)#:]+)\)", README):
        assert (ROOT / target).exists(), target


def test_the_embedded_prior_table_is_the_world():
    from sds3d.world import COLORS, KINDS

    assert f"| kinds | {', '.join(spec.synonyms[0] for spec in KINDS.values())} |" in README
    assert f"| colours | {', '.join(COLORS)} |" in README
    assert f"{len(KINDS)} kinds of object in {len(COLORS)} colours, as 32x32 images" in README


def test_the_library_example_imports_the_function_in_any_order():
    fresh = subprocess.run([sys.executable, "-c", "from sds3d import generate, GenerateConfig; "
                            "import sds3d.generate; from sds3d import generate as again; print(generate is again, "
                            "generate.__module__, type(GenerateConfig).__name__)"], capture_output=True, text=True)
    assert fresh.stdout.split() == ["True", "sds3d.generate", "type"], fresh.stderr
    from sds3d import generate as after_the_submodule  # here sds3d.generate was imported first

    assert after_the_submodule is generate and callable(after_the_submodule)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One scratch folder for the whole README, as a reader working through it would have."""
    folder = tmp_path_factory.mktemp("readme")
    previous = os.getcwd()
    os.chdir(folder)
    yield folder
    os.chdir(previous)


@pytest.fixture(scope="module")
def placeholders(tmp_path_factory):
    """Model folders named in the README -> tiny random pipelines of the same kind, built on first use."""
    from tiny_pipelines import save_tiny_if_pipeline, save_tiny_sd_pipeline

    builders = {"/path/to/stable-diffusion-2-1-base": save_tiny_sd_pipeline, "/path/to/IF-I-XL-v1.0": save_tiny_if_pipeline}
    built = {}

    def resolve(argument: str) -> str:
        if argument in builders and argument not in built:
            built[argument] = str(builders[argument](tmp_path_factory.mktemp("prior")))
        return built.get(argument, argument)

    return resolve


def commands(code: str) -> list[list[str]]:
    """The commands of a bash block: one per line, `&&` splitting a line, comments dropped."""
    found = []
    for line in code.splitlines():
        tokens = shlex.split(line, comments=True)
        while tokens:
            end = tokens.index("&&") if "&&" in tokens else len(tokens)
            found.append(tokens[:end])
            tokens = tokens[end + 1:]
    return found


def check_install(argv: list[str]) -> None:
    """The documented set-up: pip with the pinned CPU torch and extras that pyproject.toml defines."""
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert argv[:4] == ["pip", "install", "torch==2.13.0", "-e"] and len(argv) == 5, argv
    match = re.fullmatch(r"\.\[([\w,-]+)\]", argv[4])
    assert match and set(match.group(1).split(",")) <= extras, argv


def written(output: str) -> list[Path]:
    """Files named on `wrote a/b.ply, c.gif, ...` lines (names without a folder sit beside the first)."""
    paths = []
    for line in output.splitlines():
        items = line[len("wrote "):].split(", ") if line.startswith("wrote ") else []
        if items and " " not in items[0]:
            first = Path(items[0])
            paths += [first] + [Path(item) if "/" in item else first.parent / item for item in items[1:]]
    return paths


def run_sds3d(argv: list[str], capsys, placeholders) -> None:
    argv = [placeholders(argument) for argument in argv]
    command = argv[0]
    if command == "app":
        return run_app(argv)
    try:
        code = main([*argv, *SHORTER.get(" ".join(argv[:2]), SHORTER.get(command, []))])
    except SystemExit as exit_:  # argparse rejects the command line
        code = exit_.code
    output = capsys.readouterr()
    assert code == 0, f"sds3d {shlex.join(argv)} exited {code}: {output.err[-2000:]}"
    promised = written(output.out)
    if "--out" in argv:
        promised.append(Path(argv[argv.index("--out") + 1]))
    if command == "generate":
        run = written(output.out)[0].parent
        promised += [run / name for name in ("config.json", "checkpoint.pt", "metrics.csv", "loss.png")]
    missing = [str(path) for path in promised if not path.exists()]
    assert not missing, f"sds3d {shlex.join(argv)} did not write {missing}"


def run_app(argv: list[str]) -> None:
    """Starts the server as the reader would, on a free port, until it answers; then stops it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "sds3d", *argv, "--port", str(port), "--runs-dir", "app_runs"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 180
        while not any("Running on local URL" in line for line in lines):
            line = server.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200
        hint = server.stdout.readline()
        assert "--share" in hint and "share=True" not in hint, hint  # a command-line hint, not gradio's
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.parametrize("block", [pytest.param(b, id=block_id(b), marks=marks(b)) for b in BLOCKS if b[0] == "bash"])
def test_bash_block(block, workdir, capsys, placeholders):
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    for argv in commands(block[1]):
        if argv[0] == "pip":
            check_install(argv)
        elif argv[:3] == ["python", "-m", "pytest"]:  # the suite itself: what CI runs
            assert shlex.join(argv) == ci_command.split(" && ")[-1], argv
        elif argv[0] == "sds3d":
            run_sds3d(argv[1:], capsys, placeholders)
        elif argv[:2] == ["python", "-m"] and argv[2] in SHORTER_MODULES:
            done = subprocess.run([sys.executable, *argv[1:], *SHORTER_MODULES[argv[2]]], capture_output=True, text=True)
            assert done.returncode == 0, f"{shlex.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}"
        else:
            pytest.fail(f"the README runs {shlex.join(argv)!r}, which this test does not know how to check")


def shortened_generate(config, *args, **kwargs):
    for setting in GENERATE_SETTINGS:
        config = apply_override(config, setting)
    return generate(config, *args, **kwargs)


def named_paths(code: str) -> list[str]:
    """String constants of a python block that name a file or a run directory."""
    return [node.value for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and re.fullmatch(r"[\w./-]+(\.(ply|glb|obj|png|gif|json)|/[\w.-]+)", node.value)]


def readme_command_making(run_dir: str) -> list[str] | None:
    for language, code in BLOCKS:
        for argv in commands(code) if language == "bash" else []:
            if argv[:2] == ["sds3d", "generate"] and "--out" in argv and argv[argv.index("--out") + 1] == run_dir:
                return argv
    return None


@pytest.mark.parametrize("block", [pytest.param(b, id=block_id(b), marks=marks(b)) for b in BLOCKS if b[0] == "python"])
def test_python_block(block, workdir, capsys, placeholders, monkeypatch):
    code = block[1]
    for path in named_paths(code):  # a run an earlier block makes, when that block was not run
        if path.startswith("runs/") and not Path(path).exists() and readme_command_making(path):
            run_sds3d(readme_command_making(path)[1:], capsys, placeholders)
    before = {path for path in named_paths(code) if Path(path).exists()}
    monkeypatch.setattr(sds3d, "generate", shortened_generate)
    monkeypatch.setattr(sys.modules["sds3d.generate"], "generate", shortened_generate)
    editing = importlib.import_module("sds3d.edit")
    edit = editing.edit
    monkeypatch.setattr(editing, "edit", lambda *args, **kwargs: edit(*args, **{**kwargs, "steps": 2}))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    missing = [path for path in named_paths(code) if path not in before and not Path(path).exists()]
    assert not missing, f"the block did not write {missing}"
