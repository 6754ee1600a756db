"""The web UI end to end: a real server, headless Debian chromium driven by Selenium, and two API
clients at once. Skipped only when gradio, Selenium or chromium is missing and CI is not set.

`SDS3D_SCREENSHOT=docs/app.png python -m pytest tests/test_app_browser.py` refreshes the README picture
(from a 300-step run with an 8-frame 128-pixel turntable instead of 3 steps and 4 frames of 64 pixels).
"""

import io
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from browser_harness import download_links, headless_chromium, require_browser_packages, serve_on_free_port, wait_for

require_browser_packages()

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

from sds3d.app.runner import Runner, RunRequest  # noqa: E402
from sds3d.app.ui import build_ui  # noqa: E402
from sds3d.generate import generate  # noqa: E402
from sds3d.guidance.registry import load_prior  # noqa: E402

SCREENSHOT = os.environ.get("SDS3D_SCREENSHOT")
# 3 steps are enough to see the progress line: it stays up, at the last step, while the asset is scored
PAGE_STEPS, TURNTABLE = (300, (8, 128)) if SCREENSHOT else (3, (4, 64))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, runner): the page with two concurrent runs allowed and a small turntable."""
    frames, size = TURNTABLE
    runner = Runner(tmp_path_factory.mktemp("app") / "runs", turntable_frames=frames, turntable_resolution=size)
    for url in serve_on_free_port(build_ui(runner, concurrency=2)):
        yield url, runner


@pytest.fixture(scope="module")
def browser():
    # WebGL on the CPU, for the 3D viewer
    yield from headless_chromium("1400,1250", "--use-angle=swiftshader", "--enable-unsafe-swiftshader")


def _status(driver) -> str:
    return driver.find_element(By.ID, "status").text


def _start(driver, url: str, prompt: str, steps: int):
    driver.get(url)
    box = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#prompt textarea"), 30, "the prompt box")[0]
    box.send_keys(prompt)
    steps_box = driver.find_element(By.CSS_SELECTOR, "#steps input[type=number]")
    steps_box.send_keys(Keys.CONTROL, "a")
    steps_box.send_keys(str(steps), Keys.TAB)
    driver.find_element(By.ID, "run").click()


def _new_run_dir(runner, before: set) -> Path:
    return wait_for(lambda: next(iter(set(runner.runs_dir.iterdir()) - before), None), 30, "a new run directory")


def _downloads(driver) -> dict[str, str]:
    return download_links(driver, "downloads")


def _progress_line(driver) -> str | None:
    """The status box's step/ETA line (Gradio may also overlay its own "1/20 steps | 0.0s" line on it)."""
    return next((line for line in _status(driver).splitlines() if line.startswith("Step ") and "ETA" in line), None)


def _stop_drawing(driver, canvas) -> None:
    """Ends the WebGL context of the 3D viewer's `canvas`: the splat viewer redraws every frame, which on
    the CPU (SwiftShader) takes a core and makes every later screenshot wait seconds for a frame."""
    driver.execute_script("const gl = arguments[0].getContext('webgl2') || arguments[0].getContext('webgl');"
                          "gl?.getExtension('WEBGL_lose_context')?.loseContext();", canvas)


def test_prompt_to_3d_viewer_and_downloads(browser, server, tmp_path):
    url, runner = server
    before = set(runner.runs_dir.iterdir())
    _start(browser, url, "a red mug", steps=PAGE_STEPS)
    run_dir = _new_run_dir(runner, before)

    progress = wait_for(lambda: _progress_line(browser), 120, "step/ETA progress")
    assert re.match(rf"Step \d+/{PAGE_STEPS} · \d+ s elapsed · ETA (…|\d+ s)", progress)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#renders img[src]"), 60, "the live renders")
    wait_for(lambda: f"Done: {PAGE_STEPS} steps" in _status(browser), 600, "the end of the run")

    from PIL import Image

    canvas = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#model3d canvas"), 30, "the 3D viewer")[0]

    def colours_drawn() -> int:  # the splat viewer loads, sorts and draws asynchronously
        return len(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB").getcolors(maxcolors=1 << 20))

    wait_for(lambda: colours_drawn() > 50, 30, "the Gaussians drawn in the 3D viewer")
    if not SCREENSHOT:  # (the README picture shows the viewer)
        _stop_drawing(browser, canvas)

    files = wait_for(lambda: len(_downloads(browser)) == 8 and _downloads(browser), 30, "eight downloads")
    assert list(files) == ["asset.ply", "turntable.gif", "preview.png", "metrics.json", "metrics.csv", "loss.png",
                           "config.json", "eval.json"]
    with urllib.request.urlopen(next(iter(files.values()))) as response:
        assert response.read() == (run_dir / "asset.ply").read_bytes()
    with pytest.raises(urllib.error.HTTPError, match="403"):  # run directories themselves are not served
        urllib.request.urlopen(f"{url}/gradio_api/file={run_dir / 'asset.ply'}")
    assert "kind accuracy" in browser.find_element(By.ID, "scores").text
    turntable = browser.find_element(By.CSS_SELECTOR, "#turntable img").get_attribute("src")
    assert turntable.endswith("turntable.gif")
    shot = Path(SCREENSHOT or tmp_path / "app.png")
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(shot))


def test_bad_input_is_a_clear_message_on_the_page(browser, server):
    url, runner = server
    before = set(runner.runs_dir.iterdir())
    _start(browser, url, "", steps=20)
    wait_for(lambda: "the prompt is empty" in browser.find_element(By.TAG_NAME, "body").text, 30, "the error")
    assert set(runner.runs_dir.iterdir()) == before


@pytest.mark.slow  # 6 s; test_app.py checks that a run stops and keeps its result
def test_stop_keeps_the_partial_result(browser, server):
    url, runner = server
    before = set(runner.runs_dir.iterdir())
    _start(browser, url, "a blue chair", steps=1000)
    run_dir = _new_run_dir(runner, before)
    wait_for(lambda: int((re.search(r"Step (\d+)/1000", _status(browser)) or [0, 0])[1]) >= 2, 120, "two steps")
    browser.find_element(By.ID, "stop").click()
    wait_for(lambda: "Stopped at step" in _status(browser), 60, "the stopped run")
    assert "asset.ply" in wait_for(lambda: _downloads(browser), 30, "the partial result's downloads")
    steps = json.loads((run_dir / "metrics.json").read_text())["steps"]
    assert 2 <= steps < 1000 and f"Stopped at step {steps}/1000" in _status(browser)


@pytest.mark.slow  # 16 s; test_app.py checks simultaneous runs through the API
def test_two_simultaneous_requests_get_separate_outputs(server, tmp_path):
    from gradio_client import Client

    url, runner = server
    before = set(runner.runs_dir.iterdir())
    requests = [RunRequest("a red mug", steps=8, seed=1), RunRequest("a blue cube", steps=8, seed=2)]
    clients = [Client(url, verbose=False, download_files=str(tmp_path / f"client{i}"), analytics_enabled=False)
               for i in range(2)]
    jobs = [client.submit(r.prompt, r.negative_prompt, r.representation, r.guidance, r.prior, r.steps, r.seed,
                          r.guidance_scale, r.resolution, r.particles, api_name="/generate") for client, r in zip(clients, requests)]
    running = []  # runs started (their directory exists) and not finished (no metrics.json yet), over time
    while not all(job.done() for job in jobs):
        running.append(sum(not (d / "metrics.json").exists() for d in set(runner.runs_dir.iterdir()) - before))
        time.sleep(0.05)
    results = [job.result(timeout=180) for job in jobs]
    prior = load_prior("embedded")

    run_dirs = sorted(set(runner.runs_dir.iterdir()) - before)
    assert len(run_dirs) == 2
    by_prompt = {json.loads((d / "config.json").read_text())["prompt"]: d for d in run_dirs}
    first, second = by_prompt["a red mug"], by_prompt["a blue cube"]
    assert max(running) == 2  # they ran at the same time
    for request, (status, _, model, turntable, scores, files), run_dir in zip(requests, results, (first, second)):
        assert status.startswith("**Done: 8 steps**") and Path(model).name == "asset.ply"
        assert Path(turntable).name == "turntable.gif" and f"**{request.prompt.removeprefix('a ')}**" in scores
        assert Path(model).read_bytes() == (run_dir / "asset.ply").read_bytes()
        assert {Path(f).name for f in files} >= {"asset.ply", "turntable.gif", "metrics.json", "config.json"}
        config = runner.config(request)
        config.out = str(tmp_path / f"reference_seed{request.seed}")
        generate(config, prior=prior, progress=False)  # the same request run alone gives the same asset
        assert (Path(config.out) / "asset.ply").read_bytes() == Path(model).read_bytes()


@pytest.mark.slow
def test_a_gaussian_run_offers_a_mesh_on_demand(server, tmp_path):
    import trimesh
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, runner = server
    client = Client(url, verbose=False, download_files=str(tmp_path), analytics_enabled=False)
    with pytest.raises(AppError, match="Generate an asset first; the mesh is made from it."):
        client.predict(api_name="/mesh")
    before = set(runner.runs_dir.iterdir())
    *_, files = client.predict("a red mug", "", "gaussians", "sds", "embedded", 5, 0, None, 32, 1, api_name="/generate")
    assert "asset.glb" not in {Path(f).name for f in files}
    files = client.predict(api_name="/mesh")  # the same page: its latest run
    (run_dir,) = set(runner.runs_dir.iterdir()) - before
    assert [Path(f).name for f in files[:3]] == ["asset.ply", "asset.glb", "asset_obj.zip"]
    for name, path in zip(("asset.glb", "asset_obj.zip"), files[1:3]):
        assert Path(path).read_bytes() == (run_dir / name).read_bytes()
    mesh = trimesh.load(files[1], force="mesh")
    assert mesh.visual.kind == "texture" and len(mesh.faces) > 100
