import pytest
from toy_priors import GaussianToyPrior

from sds3d.cameras import orbit_cameras
from sds3d.prompts import PromptConfig, PromptProcessor


def test_view_dependent_prompts_follow_camera_azimuth_and_elevation():
    prior = GaussianToyPrior({"a red mug, front view": 1.0, "a red mug, back view": 2.0, "": 0.0, "ugly": -1.0})
    processor = PromptProcessor(prior, PromptConfig("a  red mug ", negative_prompt="ugly"))
    cams = orbit_cameras([10, 10, 10, 75], [0, 90, 180, 30], 2.5, 40, 8)
    batch = processor(cams)
    assert batch.views == ["front", "side", "back", "overhead"]
    assert batch.texts == ["a red mug, front view", "a red mug, side view", "a red mug, back view",
                           "a red mug, overhead view"]
    assert batch.cond.hidden[:, 0, 0].tolist()[:1] == [1.0] and batch.cond.hidden[2, 0, 0] == 2.0
    assert (batch.uncond.hidden == -1.0).all()
    assert batch.prompt == "a red mug" and len(batch.base_cond) == 4


def test_thresholds_are_configurable_and_view_words_can_be_off():
    prior = GaussianToyPrior({})
    cams = orbit_cameras(10, 60, 2.5, 40, 8)
    assert PromptProcessor(prior, PromptConfig("x", front_half_angle=70))(cams).views == ["front"]
    assert PromptProcessor(prior, PromptConfig("x", view_dependent=False))(cams).texts == ["x"]


@pytest.mark.parametrize("bad", ["", "   ", "x" * 301])
def test_bad_prompts(bad):
    with pytest.raises(ValueError):
        PromptProcessor(GaussianToyPrior({}), PromptConfig(bad))
