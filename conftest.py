"""Set-up and fixtures shared by tests/ and benchmarks/tests/ (which also import tests/'s helper
modules, such as toy_priors)."""

import os
import sys
from pathlib import Path

# Before torch starts its OpenMP pool: idle threads sleep instead of spinning, which otherwise makes
# 2-thread runs several times slower whenever anything else is using the CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(2)
sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))


@pytest.fixture(scope="session", autouse=True)
def native_kernels():
    """Build the native kernels before any test runs: on a fresh install their one-time compile
    messages would otherwise land in whichever test first renders, in the middle of its output."""
    from sds3d.cuda.build import KERNELS, load_extension

    for name in KERNELS:
        load_extension(name)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny workloads: one thread is fastest and avoids OpenMP spinning on a busy
    machine. Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory):
    """A tiny random Stable Diffusion pipeline saved in the diffusers layout (shared by the session)."""
    from tiny_pipelines import save_tiny_sd_pipeline

    return save_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def tiny_if_folder(tmp_path_factory):
    """A tiny random DeepFloyd IF stage-I pipeline saved in the diffusers layout."""
    from tiny_pipelines import save_tiny_if_pipeline

    return save_tiny_if_pipeline(tmp_path_factory.mktemp("tiny_if"))
