"""Select the points of a run or asset that match a text query on its feature field (`sds3d
distill-features`; relevancy > threshold, grown through nearest neighbours), then extract them
(--out), delete them or recolour them, and/or save a highlighted render:
`sds3d select RUN --query "the handle" --out part.ply`."""

from __future__ import annotations

from pathlib import Path

FILE_SUFFIXES = (".ply", ".glb", ".gltf", ".obj")


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "select", help="select parts of a run or asset by text; extract, delete or recolour them",
        description=__doc__)
    parser.add_argument("asset", metavar="RUN", help="run directory or asset file with a feature field")
    parser.add_argument("--query", required=True, help='what to select, e.g. "the handle"')
    parser.add_argument("--out", default=None, help="output: .ply / .glb / .obj file, or (with --recolour or "
                                                   "--delete on a run) a new run directory")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--delete", action="store_true", help="write the asset without the selection")
    action.add_argument("--recolour", "--recolor", dest="recolour", default=None, metavar="COLOUR",
                        help="write the asset with the selection recoloured (a name, #rrggbb or r,g,b)")
    parser.add_argument("--highlight", default=None, metavar="PNG", help="save 4 views with the selection tinted")
    parser.add_argument("--threshold", type=float, default=0.5, help="relevancy threshold (default 0.5)")
    parser.add_argument("--low-threshold", type=float, default=0.2,  # select.DEFAULT_LOW_THRESHOLD
                        help="also select points above this joined to the selection through their nearest "
                             "neighbours (default 0.2; equal to --threshold: no growth)")
    parser.add_argument("--context", default=None, metavar="TEXT",
                        help='what the object is, e.g. "a red mug": parts are then sought among its kind\'s '
                             '(default: a run\'s own prompt; "" for none)')
    parser.add_argument("--teacher", default=None, help="teacher folder (default: the one the field was distilled with)")
    parser.set_defaults(func=run)


def _check_output(args, source_is_run: bool):
    from sds3d.errors import InputError
    from sds3d.validation import check_writable

    if args.out is None:
        if args.delete or args.recolour:
            raise InputError("--delete and --recolour need --out (a file, or a new run directory)")
        if args.highlight is None:
            raise InputError("nothing to write: give --out and/or --highlight")
        return None
    out = Path(args.out)
    if out.suffix.lower() in FILE_SUFFIXES:
        check_writable(out.parent)
        return out
    if out.suffix:
        raise InputError(f"--out {out}: write {', '.join(FILE_SUFFIXES)} or a run directory (no suffix)")
    if not source_is_run or not (args.delete or args.recolour):
        raise InputError(f"--out {out}: a run directory is written only for --delete / --recolour of a run; "
                         f"give a file ({', '.join(FILE_SUFFIXES)})")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out}: the directory exists and is not empty")
    check_writable(out)
    return out


def _write_asset(representation, path: Path) -> None:
    """A .ply (Gaussians) or a mesh file, written under its own name in a temporary folder beside
    `path` (an .obj with its .mtl and .png), then moved into place, the asset file last."""
    import os
    import shutil
    import tempfile

    from sds3d.errors import InputError
    from sds3d.representations import Gaussians

    if path.suffix.lower() == ".ply" and not isinstance(representation, Gaussians):
        raise InputError(f"--out {path}: a mesh is written as .glb or .obj")
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    try:
        tmp = folder / path.name
        if path.suffix.lower() == ".ply":
            representation.save_ply(tmp)
        elif isinstance(representation, Gaussians):
            from sds3d.export import export_textured

            export_textured(representation, tmp)
        else:
            representation.save(tmp)
        for written in sorted(folder.iterdir(), key=lambda file: file == tmp):
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _write_run(source: Path, representation, out: Path) -> None:
    """A new run directory: config.json (out updated), checkpoint.pt, asset, preview.png, features/."""
    import json
    import os
    import shutil
    import tempfile

    import torch

    from sds3d.export import save_asset
    from sds3d.features.assets import features_dir
    from sds3d.features.field import feature_field_of, field_filename, save_field
    from sds3d.turntable import image_grid, render_turntable, save_png

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        config = json.loads((source / "config.json").read_text())
        config["out"] = str(out)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        torch.save({"representation": representation.state_dict(), "step": config.get("steps", 0)},
                   tmp / "checkpoint.pt")
        save_asset(representation, tmp)
        save_png(image_grid(render_turntable(representation, n_frames=8, resolution=128), columns=4),
                 tmp / "preview.png")
        field = feature_field_of(representation)
        save_field(field, representation, features_dir(tmp) / field_filename(field.teacher_name, field.latent_dim))
        if out.exists():
            out.rmdir()  # empty, checked before
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def run(args) -> int:
    import json

    from sds3d.features.assets import load_with_features, run_prompt
    from sds3d.features.operations import delete, extract, parse_color, recolour
    from sds3d.features.select import render_highlight, select_points
    from sds3d.turntable import image_grid, save_png

    source = Path(args.asset)
    out = _check_output(args, source.is_dir())
    if args.recolour:
        parse_color(args.recolour)  # a bad colour fails before any work
    teacher = None
    if args.teacher:
        from sds3d.features.load import load_feature_teacher

        teacher = load_feature_teacher(args.teacher)
    asset = load_with_features(source)
    if out is not None and out.suffix.lower() in (".glb", ".gltf", ".obj"):
        from sds3d.export import require_mesh_tools
        from sds3d.representations import Gaussians

        if isinstance(asset, Gaussians):  # meshed by marching cubes, unwrapped, baked
            require_mesh_tools("nerf")
    context = args.context if args.context is not None else run_prompt(source)
    mask = select_points(asset, args.query, teacher=teacher, threshold=args.threshold, context=context or None,
                         low_threshold=args.low_threshold)
    if args.highlight:
        save_png(image_grid(render_highlight(asset, mask), columns=4), args.highlight)
    if out is not None:
        if args.recolour:
            recolour(asset, mask, args.recolour)
            result = asset
        else:
            result = delete(asset, mask) if args.delete else extract(asset, mask)
        if out.suffix:
            _write_asset(result, out)
        else:
            _write_run(source, result, out)
    print(json.dumps({"query": args.query, "selected": int(mask.sum()), "points": int(mask.numel()),
                      "out": str(out) if out else None, "highlight": args.highlight}))
    return 0
