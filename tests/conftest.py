"""Fixtures shared by the tests in this folder."""

import pytest

from tiny_priors import tiny_embedded_prior


@pytest.fixture(scope="module")
def tiny_prior():
    """A tiny random embedded prior (`tiny_priors.tiny_embedded_prior`), one per test module."""
    return tiny_embedded_prior()
