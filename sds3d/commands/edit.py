"""`sds3d edit RUN --prompt TEXT`: edit a finished run (or a 3DGS .ply, .glb or .obj) towards a new prompt
(sds3d.edit)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

GUIDANCES = ("pds", "dds", "ssd", "sds")  # sds3d.guidance.edit.base.EDIT_SCORES (tests keep them equal)


def add_command(subparsers) -> None:
    parser = subparsers.add_parser("edit", help="edit a finished run towards a new prompt (PDS, DDS, SSD or SDS)")
    parser.add_argument("run", help="a run directory (or a 3DGS .ply or a .glb / .gltf / .obj mesh, with "
                                    "--source-prompt)")
    parser.add_argument("--prompt", required=True, help="the target prompt, e.g. \"a blue mug\"")
    parser.add_argument("--source-prompt", dest="source_prompt", default=None,
                        help="what the asset shows now (default: the run's own prompt)")
    parser.add_argument("--region", default=None,
                        help="edit only the part matching this text, e.g. \"the handle\" (needs a feature field: "
                             "sds3d distill-features)")
    parser.add_argument("--guidance", choices=GUIDANCES, default="pds", help="editing score (default pds)")
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps (default 200)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", default=None, help="new run directory (default: <RUN>_<prompt>, or "
                                                    "<RUN>_<prompt>_2, ... when that holds a run)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted edit in --out")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any EditConfig field, e.g. pds.guidance_scale=50 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from sds3d.config import apply_override
    from sds3d.edit import EditConfig, edit
    from sds3d.errors import InputError
    from sds3d.prompts import slug
    from sds3d.run_folder import ReplacedRunWarning, choose_run_folder

    config = EditConfig()
    for assignment in args.set:
        config = apply_override(config, assignment)
    source = Path(args.run)
    out, note = choose_run_folder(args.out or source.parent / f"{source.stem}_{slug(args.prompt, 'edit')}",
                                  default=not args.out, resume=args.resume)
    if note:
        print(f"sds3d: note: {note}", file=sys.stderr)
    for name in ("seed", "steps"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    if args.quiet:
        from sds3d.monitor import quiet

        quiet()
    try:
        with warnings.catch_warnings():  # the note above is the warning's one line
            warnings.simplefilter("ignore", ReplacedRunWarning)
            result = edit(source, args.prompt, source_prompt=args.source_prompt, region=args.region,
                          guidance=args.guidance, out=str(out), config=config, resume=args.resume,
                          progress=not args.quiet)
    except (FileNotFoundError, ValueError) as error:  # InputError included
        raise InputError(str(error).splitlines()[0] if str(error) else type(error).__name__) from None
    animation = next(Path(result.out).glob("turntable.*")).name  # .gif or .mp4 (turntable_format)
    print(f"wrote {result.out}/{result.metrics['asset']}, {animation}, before_after.png, metrics.json")
    print(json.dumps(result.metrics))
    return 0
