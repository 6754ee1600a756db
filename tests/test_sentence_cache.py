"""Sentence embeddings kept on disk (`sds3d.features.sentence_cache`)."""

import torch

from sds3d.features.part_teacher import sentence_embeddings
from sds3d.features.sentence_cache import cache_path, cached_embeddings
from sds3d.guidance.priors.text_encoder import get_text_encoder


def test_a_phrase_list_is_embedded_once_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("SDS3D_CACHE_DIR", str(tmp_path))
    calls = []

    def compute(value):
        return lambda: calls.append(value) or torch.full((2, 3), value)

    first = cached_embeddings(["a", "b"], compute(1.0))
    again = cached_embeddings(["a", "b"], compute(2.0))  # read back: not computed
    assert calls == [1.0] and torch.equal(first, again) and torch.equal(again, torch.full((2, 3), 1.0))
    assert torch.equal(cached_embeddings(["b", "a"], compute(3.0)), torch.full((2, 3), 3.0))  # another list
    cache_path(["a", "b"]).write_bytes(b"not a tensor file")
    assert torch.equal(cached_embeddings(["a", "b"], compute(4.0)), torch.full((2, 3), 4.0))  # computed again
    assert torch.equal(cached_embeddings(["a", "b"], compute(5.0)), torch.full((2, 3), 4.0))  # and kept
    blocked = tmp_path / "a file"
    blocked.write_text("")
    monkeypatch.setenv("SDS3D_CACHE_DIR", str(blocked))  # a cache that cannot be written is skipped
    assert torch.equal(cached_embeddings(["a", "b"], compute(6.0)), torch.full((2, 3), 6.0))


def test_cached_sentence_embeddings_are_the_encoders_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("SDS3D_CACHE_DIR", str(tmp_path))
    phrases = ["the handle", "a red mug on a table"]
    direct = sentence_embeddings(phrases, get_text_encoder())
    assert torch.equal(sentence_embeddings(phrases), direct)  # computed and stored
    assert cache_path(phrases).is_file()
    assert torch.equal(sentence_embeddings(phrases), direct)  # read back
