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


def _texture_image(material):
    """A material's texture image (glTF baseColorTexture or a simple material's image), or None."""
    return getattr(material, "baseColorTexture", None) or getattr(material, "image", None)


def _textured(visual) -> bool:
    """A texture image and UVs to sample it (what `Mesh.from_trimesh` keeps as a texture)."""
    image = _texture_image(getattr(visual, "material", None))
    return visual.kind == "texture" and visual.uv is not None and image is not None


def _vertex_colors(visual, count: int) -> np.ndarray:
    """[count, 4] uint8 colours of a TextureVisuals part's vertices: its texture at their UVs (times
    a glTF baseColorFactor), or its material's colour when it has no texture or no UVs."""
    from trimesh.visual.color import uv_to_color

    material = visual.material
    if not _textured(visual):
        return np.tile(material.main_color, (count, 1))
    image = _texture_image(material)
    factor = getattr(material, "baseColorFactor", None)
    factor = np.ones(4) if factor is None else np.asarray(factor, dtype=np.float64) / 255.0
    return (uv_to_color(visual.uv, image) * factor).round().astype(np.uint8)


def load_trimesh(path):
    """Inverse of `save_trimesh`: a mesh file (a scene flattened into one trimesh.Trimesh) in the
    world frame; .glb / .gltf / .obj are taken as +Y up, as their formats say. When a scene's parts
    are not all textured, its textured and material-coloured parts turn to vertex colours first
    (`_vertex_colors`): trimesh's merge of mixed parts would leave them grey or black."""
    import trimesh

    parts = [part for part in trimesh.load(path, force="scene", process=False).dump()
             if isinstance(part, trimesh.Trimesh)]  # placed where the scene puts them
    if len(parts) > 1 and not all(_textured(part.visual) for part in parts):
        for part in parts:
            if isinstance(part.visual, trimesh.visual.TextureVisuals):
                colors = _vertex_colors(part.visual, len(part.vertices))
                part.visual = trimesh.visual.ColorVisuals(part, vertex_colors=colors)
    mesh = trimesh.util.concatenate(parts) if parts else trimesh.Trimesh()
    if Path(path).suffix.lower() in Y_UP_SUFFIXES:
        mesh.vertices = np.asarray(mesh.vertices) @ world_to_file("+y").numpy()
    return mesh


__all__ = ["Y_UP_SUFFIXES", "save_trimesh", "load_trimesh"]
