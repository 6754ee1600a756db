"""Mesh files in the world frame: .glb / .gltf / .obj are written and read +Y up with the front
towards +Z, as glTF says (the "+y" convention of `sds3d.axes`); other formats (.ply, .stl) keep the
world frame (+Z up). Meshes are trimesh.Trimesh objects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sds3d.axes import world_to_file


# Mesh formats whose readers take +Y as up (glTF by its spec, OBJ by custom): written and read in
# the "+y" convention of `sds3d.axes` (front +Z); other formats (.ply, .stl) keep the world frame.
Y_UP_SUFFIXES = (".glb", ".gltf", ".obj")


def save_trimesh(mesh, path) -> Path:
    """Writes a trimesh.Trimesh (world frame) by the suffix of `path`: .glb / .gltf / .obj +Y up
    (`Y_UP_SUFFIXES`); a textured .obj also writes <stem>.mtl and <stem>.png beside it."""
    import trimesh

    path = Path(path)
    if path.suffix.lower() in Y_UP_SUFFIXES:
        mesh = mesh.copy()
        mesh.vertices = np.asarray(mesh.vertices) @ world_to_file("+y").numpy().T
    if path.suffix.lower() == ".obj" and mesh.visual.kind == "texture":
        mesh = mesh.copy()
        mesh.visual.material.name = path.stem
        text, files = trimesh.exchange.obj.export_obj(mesh, include_normals=False, return_texture=True,
                                                      mtl_name=f"{path.stem}.mtl")
        for name, data in files.items():
            (path.parent / name).write_bytes(data)
        path.write_text(text)
    else:
        mesh.export(path)
    return path


def load_trimesh(path):
    """Inverse of `save_trimesh`: a mesh file (a scene flattened into one trimesh.Trimesh) in the
    world frame; .glb / .gltf / .obj are taken as +Y up, as their formats say."""
    import trimesh

    mesh = trimesh.load(path, force="mesh", process=False)
    if Path(path).suffix.lower() in Y_UP_SUFFIXES:
        mesh.vertices = np.asarray(mesh.vertices) @ world_to_file("+y").numpy()
    return mesh


__all__ = ["Y_UP_SUFFIXES", "save_trimesh", "load_trimesh"]
