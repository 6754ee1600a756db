"""The folder mapping installs as one `sds3d` package, with assets and kernel sources inside."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_folder_is_listed_as_a_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *relative)))
    assert found == set(config["packages"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the sources: setuptools' build/ folder would otherwise stay in the tree and
    carry files deleted since into later wheels."""
    source, out = tmp_path_factory.mktemp("source") / "sds3d", tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "runs", "data", "__pycache__",
                                                                  "*.egg-info", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True)
    return next(out.glob("sds3d-*.whl"))


def test_a_file_deleted_from_the_sources_is_not_in_the_wheel(wheel):
    """A stale build/ in the working tree (say, from an older checkout) must not leak into the package."""
    names = zipfile.ZipFile(wheel).namelist()
    presets = {Path(n).name for n in names if n.startswith("sds3d/presets/") and n.endswith(".json")}
    assert presets == {p.name for p in (ROOT / "sds3d" / "presets").glob("*.json")}


def test_wheel_holds_one_package_with_assets_and_sources(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"sds3d"}
    assert "sds3d/assets/example_meshes/red_sphere.ply" in names
    assert "sds3d/cuda/csrc/gaussian_raster.cpp" in names and "sds3d/cuda/csrc/gaussian_math.h" in names
    assert "sds3d/representations/gaussians.py" in names


def test_assets_resolve_from_an_unpacked_wheel(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path)
    # -S: no site-packages, so the editable install cannot shadow the unpacked wheel
    code = ("from sds3d.assets import asset_path; from sds3d.cuda.build import CSRC; "
            "p = asset_path('example_meshes', 'red_sphere.ply'); print(p); print((CSRC / 'gaussian_raster.cpp').exists())")
    result = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path)}, check=True)
    path, has_source = result.stdout.split()
    assert path.startswith(str(tmp_path)) and has_source == "True"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```bash\n{ci}\n```" in readme
