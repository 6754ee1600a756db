"""Distil a 2D feature teacher into a feature field on a finished run or an imported asset (.ply, .glb,
.obj): `sds3d distill-features RUN_DIR` saves RUN_DIR/features/<teacher>-d<dim>.safetensors (x.ply:
x_features/ beside it; `sds3d.features.assets`)."""

from __future__ import annotations


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "distill-features", help="add a feature field (for text queries) to a run or asset",
        description=__doc__)
    parser.add_argument("asset", metavar="RUN_DIR", help="run directory, 3DGS .ply, or .glb/.gltf/.obj mesh")
    parser.add_argument("--teacher", default=None, help="teacher folder (default: the shipped part teacher)")
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps after the lift (default 20)")
    parser.add_argument("--dim", type=int, default=None, help="latent channels per point, decoded to the teacher's "
                                                               "width (default 16)")
    parser.add_argument("--views", type=int, default=None, help="teacher views (default 24)")
    parser.add_argument("--resolution", type=int, default=None, help="render size the teacher sees (default 128)")
    parser.add_argument("--loss", default=None, help="l1 (default) | l2 | cosine")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json

    import torch

    from sds3d.features.assets import features_dir
    from sds3d.features.distill import DistillConfig, check_config, distill_features
    from sds3d.features.field import field_filename, save_field
    from sds3d.features.load import load_feature_teacher
    from sds3d.scene.load import read_asset
    from sds3d.validation import check_writable

    overrides = {"steps": args.steps, "latent_dim": args.dim, "views": args.views, "resolution": args.resolution,
                 "loss": args.loss}
    config = DistillConfig(**{k: v for k, v in overrides.items() if v is not None})
    check_config(config)
    representation = read_asset(args.asset)
    out_dir = features_dir(args.asset)
    check_writable(out_dir)
    teacher = load_feature_teacher(args.teacher)
    with torch.enable_grad():  # distillation trains the field whatever the caller's grad mode
        result = distill_features(representation, teacher, config, progress=not args.quiet,
                                  teacher_path=str(args.teacher or ""))
    path = save_field(result.field, representation, out_dir / field_filename(teacher.name, result.field.latent_dim))
    print(f"wrote {path}")
    print(json.dumps({"features": str(path), "teacher": teacher.name, "dim": result.field.dim,
                      "latent_dim": result.field.latent_dim, "points": int(result.field.points(representation).shape[0]),
                      "steps": config.steps, "final_loss": round(result.losses[-1], 5) if result.losses else None,
                      "seconds": round(result.seconds, 2)}))
    return 0
