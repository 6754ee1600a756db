"""sds3d: text-to-3D by score distillation that runs on a CPU.

Public API (imported lazily so `import sds3d` stays cheap):
    Cameras, CameraSampler, orbit_cameras, turntable_cameras  - sds3d.cameras
    RenderOutput                                              - sds3d.types
    Gaussians, GaussiansConfig                                - sds3d.representations
    generate, GenerateConfig                                  - sds3d.generate

    from sds3d import generate, GenerateConfig
    result = generate(GenerateConfig(prompt="a red mug", out="runs/mug"))
    result.representation.render(...)  # or runs/mug/asset.ply, turntable.gif, metrics.json
"""

import sys
from importlib import import_module
from types import ModuleType

__version__ = "0.1.0"

_EXPORTS = {
    "Cameras": "sds3d.cameras", "CameraSampler": "sds3d.cameras", "orbit_cameras": "sds3d.cameras",
    "turntable_cameras": "sds3d.cameras", "RenderOutput": "sds3d.types",
    "Gaussians": "sds3d.representations", "GaussiansConfig": "sds3d.representations",
    "generate": "sds3d.generate", "GenerateConfig": "sds3d.generate",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sds3d' has no attribute {name!r}")


class _Package(ModuleType):
    """Importing the submodule `sds3d.generate` binds the package attribute `generate`; keep it the
    function of that name, so `from sds3d import generate` gives the function in every import order."""

    def __setattr__(self, name, value):
        if isinstance(value, ModuleType) and _EXPORTS.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = sorted(_EXPORTS)
