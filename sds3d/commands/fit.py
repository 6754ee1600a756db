"""Photometric reconstruction of a capture in the nerfstudio data format into 3D Gaussians (L1 +
D-SSIM, native rasterizer, densification): `sds3d fit DATASET --out RUN` writes a run folder that
sds3d render, export, eval and edit read; PSNR on the capture's test_filenames goes to metrics.json."""

from __future__ import annotations


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit", help="fit 3D Gaussians to a capture (nerfstudio transforms.json + images)",
        description=__doc__)
    parser.add_argument("dataset", help="capture folder holding transforms.json, or the json itself")
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--prompt", default="", help='what the capture shows, e.g. "a red mug": kept as the run\'s '
                        'prompt, which `sds3d select` takes as its context and `sds3d edit` as its source prompt')
    parser.add_argument("--steps", type=int, default=1000, help="optimisation steps (more for large real captures)")
    parser.add_argument("--num-gaussians", type=int, default=5000, help="initial Gaussians (densification adds more)")
    parser.add_argument("--max-gaussians", type=int, default=60000)
    parser.add_argument("--sh-degree", type=int, default=0, choices=(0, 1, 2, 3))
    parser.add_argument("--init", default="auto", choices=("auto", "hull", "frustum", "sphere"),
                        help="initial points: visual hull (needs alpha), view-frustum intersection, or a ball")
    parser.add_argument("--dssim", type=float, default=0.2, help="weight of the D-SSIM term (0: L1 only)")
    parser.add_argument("--no-normalize", action="store_true",
                        help="keep the capture's frame (default: look-at point to the origin, cameras 2.5 away)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys
    import warnings

    import torch

    from sds3d.run_folder import ReplacedRunWarning, choose_run_folder
    from sds3d.scene.fit import FitConfig, fit

    if torch.get_num_threads() > 2 and "OMP_NUM_THREADS" not in __import__("os").environ:
        torch.set_num_threads(2)
    config = FitConfig(dataset=args.dataset, out=args.out, prompt=args.prompt, steps=args.steps,
                       num_gaussians=args.num_gaussians, max_gaussians=args.max_gaussians,
                       sh_degree=args.sh_degree, init=args.init,
                       lambda_dssim=args.dssim, normalize=not args.no_normalize, seed=args.seed,
                       checkpoint_every=args.checkpoint_every)
    _, note = choose_run_folder(args.out, default=False, resume=args.resume)
    if note:
        print(f"sds3d: note: {note}", file=sys.stderr)
    with warnings.catch_warnings():  # the note above is the warning's one line
        warnings.simplefilter("ignore", ReplacedRunWarning)
        result = fit(config, resume=args.resume, progress=not args.quiet)
    shown = {key: result.metrics.get(key) for key in ("steps", "seconds", "gaussians", "psnr_train", "psnr_test",
                                                       "psnr_test_initial", "init")}
    print(f"wrote {result.out}")
    print(json.dumps(shown))
    return 0
