"""What the embedded prior knows (`sds3d world`) and the one-line note for prompts outside it."""

import os
import random
import sys
import warnings

import pytest

from sds3d.app.limits import Limits
from sds3d.app.runner import Runner, RunRequest
from sds3d.cli import main
from sds3d.generate import GenerateConfig, generate
from sds3d.guidance.priors.embedded_prior import EmbeddedPrior
from sds3d.representations import GaussiansConfig
from sds3d.scope import OutsideWorldWarning, names_a_kind, scope_note
from sds3d.world import COLORS, KINDS, sample_caption

pytestmark = pytest.mark.usefixtures("one_thread")
OUTSIDE = ("a dragon", "an astronaut riding a horse", "a glass of water", "a bowl of fruit, front view")
TINY = ["--steps", "1", "--set", "resolution=16", "--set", "views_per_step=1", "--set", "turntable_frames=2",
        "--set", "turntable_resolution=16", "--set", "gaussians.num_points=100"]


@pytest.fixture(scope="module")
def embedded():
    return EmbeddedPrior.load()


def test_every_paraphrase_and_plural_names_a_kind():
    rng = random.Random(0)
    for kind, spec in KINDS.items():
        for _ in range(20):
            assert names_a_kind(sample_caption(kind, rng.choice(list(COLORS)), rng.choice([None, "side"]), rng))
        for noun in spec.synonyms:
            assert names_a_kind(f"three {noun}s on a table" if noun != "table" else "two tables")
    assert names_a_kind("boxes in blue") and names_a_kind("two red cactuses")
    assert not any(map(names_a_kind, OUTSIDE))


def test_the_note_is_for_the_embedded_prior_only(embedded, tmp_path):
    note = scope_note("a dragon", "embedded")
    assert "'a dragon' names no micro-world object" in note and "28 kinds x 10 colours" in note
    assert "\n" not in note and scope_note("a dragon", embedded) == note
    assert scope_note("a red mug", "embedded") is None
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    assert scope_note("a dragon", str(tmp_path)) is None  # Stable Diffusion knows dragons


def test_the_library_warns_and_goes_on(embedded, tmp_path):
    config = GenerateConfig(prompt="a dragon", steps=1, views_per_step=1, resolution=16, out=str(tmp_path),
                            turntable_frames=2, turntable_resolution=16, gaussians=GaussiansConfig(num_points=100))
    with pytest.warns(OutsideWorldWarning, match="names no micro-world object"):
        assert generate(config, prior=embedded, progress=False).metrics["steps"] == 1
    config.prompt, config.out = "a red mug", str(tmp_path / "mug")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutsideWorldWarning)
        generate(config, prior=embedded, progress=False)


@pytest.fixture
def progress_bars_restored():
    """`--quiet` turns the model-loading bars of diffusers, transformers and huggingface_hub off for the
    rest of the process (`sds3d.monitor.quiet`); put them back as they were for the tests after."""
    import huggingface_hub.utils
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    hub = sys.modules[huggingface_hub.utils.are_progress_bars_disabled.__module__]
    env, hub_states = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"), dict(hub.progress_bar_states)
    libraries = {module: module.is_progress_bar_enabled() for module in (diffusers_logging, transformers_logging)}
    yield
    if env is None:
        os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    else:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = env
    hub.progress_bar_states.clear()
    hub.progress_bar_states.update(hub_states)
    for module, enabled in libraries.items():
        (module.enable_progress_bar if enabled else module.disable_progress_bar)()


def test_cli_says_it_in_one_line_and_quiet_has_no_bars(tmp_path, capfd, monkeypatch, progress_bars_restored):
    """`sds3d generate` in this process (a new one spent ~10 s importing diffusers and peft again), with
    the process-wide text encoder forgotten so that model loading, whose bars --quiet must silence,
    happens here: the UNet and the text encoder, whose loading shows transformers' "Loading weights"
    bar without --quiet. Warnings that Python would print in a new process count as output too."""
    from sds3d.guidance.priors import text_encoder

    monkeypatch.setattr(text_encoder, "_SHARED", {})
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["generate", "a dragon", "--quiet", *TINY, "--out", str(tmp_path)])
    err = capfd.readouterr().err
    assert code == 0, err
    assert text_encoder._SHARED  # the text encoder was loaded by this run
    assert err.splitlines() == [f"sds3d: note: {scope_note('a dragon', 'embedded')}"]
    hidden_by_default = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
    assert [str(w.message) for w in caught if not issubclass(w.category, hidden_by_default)] == []
    assert (tmp_path / "asset.ply").is_file()


def test_world_lists_the_kinds_and_colours(capsys):
    assert main(["world"]) == 0
    out = capsys.readouterr().out
    assert "28 kinds x 10 colours" in out and "32x32" in out
    for name in (*KINDS, *COLORS):
        assert f"\n  {name} " in out


@pytest.mark.filterwarnings("ignore::sds3d.scope.OutsideWorldWarning")  # the library's, in the worker thread
def test_the_web_ui_shows_the_note(tmp_path, embedded, monkeypatch):
    monkeypatch.setattr("sds3d.app.runner.load_prior", lambda spec, device: embedded)
    runner = Runner(tmp_path, limits=Limits(max_steps=5), turntable_frames=2, turntable_resolution=16)
    outside = runner.start(RunRequest("a dragon", steps=1), owner="a")
    inside = runner.start(RunRequest("a mug", steps=1), owner="b")  # no colour: nothing for the evaluator to score
    for run in (outside, inside):
        assert run.finished.wait(120) and run.error is None
    assert outside.note == scope_note("a dragon", "embedded") and inside.note is None


def test_sample_quiet_silences_model_loading(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("sds3d.monitor.quiet", lambda: calls.append("quiet"))
    assert main(["sample", "a red cube", "--n", "1", "--steps", "2", "--out", str(tmp_path / "s.png"), "--quiet"]) == 0
    assert calls == ["quiet"] and (tmp_path / "s.png").is_file()
