"""`sds3d library build | search | make-microworld`: asset libraries for retrieval-augmented runs.

    sds3d library build LIB                         # index LIB (again: only new or changed assets)
    sds3d library search LIB "a chair" --k 5        # hits with scores, and LIB_search.png
    sds3d library search LIB "a red mug" --rerank   # also re-ranked by the prior's images, with yaw
    sds3d library make-microworld LIB --variants 3  # shape variants of the 28 micro-world kinds
"""

from __future__ import annotations

import sys
from pathlib import Path


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "library", help="asset libraries for retrieval: build an index, search it, make a micro-world library",
        description="An asset library is a folder of meshes (.glb/.gltf/.obj/.ply) and 3DGS PLYs with "
                    "library.jsonl (one JSON line per asset: file, caption, optional tags). See docs/retrieval.md.")
    commands = parser.add_subparsers(dest="library_command", metavar="{build,search,make-microworld}")
    commands.required = True

    build = commands.add_parser("build", help="render and embed every asset; only new or changed ones when run again")
    build.add_argument("library", metavar="LIB", help="library folder (with library.jsonl)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=run_build)

    search = commands.add_parser("search", help="the assets whose captions are nearest a text, with a contact sheet")
    search.add_argument("library", metavar="LIB", help="library folder with a built index")
    search.add_argument("query", help='text to search for, e.g. "a chair"')
    search.add_argument("--k", type=int, default=5, help="number of hits (default 5)")
    search.add_argument("--rerank", action="store_true",
                        help="retrieve as generation does: caption candidates re-ranked by images sampled from "
                             "the embedded prior, each turned to face the front")
    search.add_argument("--candidates", type=int, default=None, help="caption candidates re-ranked (--rerank; default 16)")
    search.add_argument("--sheet", default=None, metavar="PNG",
                        help="contact sheet path (default: <LIB>_search.png beside the library)")
    search.add_argument("--method", default="auto", choices=("auto", "flat", "ivf", "numpy"),
                        help="nearest-neighbour search: faiss flat / IVF, NumPy, or auto by size (default)")
    search.set_defaults(func=run_search)

    micro = commands.add_parser("make-microworld", help="a library of shape variants of the micro-world's kinds")
    micro.add_argument("library", metavar="LIB", help="folder to write (created; must not hold a library yet)")
    micro.add_argument("--variants", type=int, default=3, help="variants per kind (default 3)")
    micro.add_argument("--kinds", default=None, help="comma-separated kinds (default: all 28)")
    micro.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    micro.add_argument("--no-index", action="store_true", help="write the assets only; build the index later")
    micro.add_argument("--quiet", action="store_true", help="no progress bars")
    micro.set_defaults(func=run_make_microworld)


def _build(library, quiet: bool) -> int:
    """Build the index, printing each skipped asset as one warning line on stderr."""
    import warnings

    from sds3d.retrieval.index import build_index
    from sds3d.retrieval.library import SkippedAssetWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedAssetWarning)
        report = build_index(library, progress=not quiet)
    for warning in caught:
        if issubclass(warning.category, SkippedAssetWarning):
            print(f"sds3d: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    indexed = len(report.rendered) + len(report.reused)
    print(f"indexed {indexed} assets in {report.index_dir} ({len(report.rendered)} rendered, "
          f"{len(report.reused)} unchanged, {len(report.skipped)} skipped)")
    return 0


def run_build(args) -> int:
    return _build(args.library, args.quiet)


def run_search(args) -> int:
    import torch

    with torch.no_grad():  # nothing here trains; the library caller's grad mode is left as it was
        return _search(args)


def _search(args) -> int:
    from sds3d.errors import InputError
    from sds3d.retrieval.contact_sheet import asset_thumbnail, save_contact_sheet
    from sds3d.retrieval.embedders import ImageEmbedder, TextEmbedder
    from sds3d.retrieval.index import LibraryIndex, search_captions
    from sds3d.retrieval.retrieve import DEFAULT_CANDIDATES, MIN_TEXT_SCORE, retrieve
    from sds3d.validation import check_writable

    if args.k < 1:
        raise InputError(f"--k must be at least 1, got {args.k}")
    if args.candidates is not None and not args.rerank:
        raise InputError("--candidates re-ranks caption candidates by images: give it with --rerank")
    library = Path(args.library)
    sheet = Path(args.sheet) if args.sheet else library.resolve().parent / f"{library.resolve().name}_search.png"
    if sheet.suffix.lower() != ".png":
        raise InputError(f"--sheet {sheet}: the contact sheet is a .png file")
    check_writable(sheet.parent)
    text_embedder, image_embedder = TextEmbedder(), ImageEmbedder()
    index = LibraryIndex.load(library, text_embedder.name, image_embedder.name)
    if args.method in ("flat", "ivf"):
        from sds3d.retrieval.search import faiss_available

        if not faiss_available():
            raise InputError(f"--method {args.method} needs faiss: pip install faiss-cpu (or --method numpy)")
    tiles, labels = [], []
    if args.rerank:
        hits = retrieve(args.query, index, k=args.k, candidates=args.candidates or DEFAULT_CANDIDATES,
                        method=args.method, text_embedder=text_embedder, image_embedder=image_embedder)
        print(f"{'rank':>4}  {'text':>6}  {'image':>6}  {'yaw':>6}  file  caption")
        for rank, hit in enumerate(hits, 1):
            file = hit.path.relative_to(index.folder).as_posix()
            print(f"{rank:>4}  {hit.text_score:6.3f}  {hit.image_score:6.3f}  {hit.yaw_degrees:6.0f}  {file}  {hit.caption}")
            tiles.append(asset_thumbnail(hit.path, hit.yaw_degrees))
            labels.append(f"{rank}. {hit.caption}\ntext {hit.text_score:.2f} image {hit.image_score:.2f}")
        if len(hits) < args.k:
            print(f"({len(hits)} of {args.k}: no other caption reaches the similarity {MIN_TEXT_SCORE} retrieval asks for)")
    else:
        hits = search_captions(index, text_embedder.embed([args.query])[0], args.k, args.method)
        print(f"{'rank':>4}  {'score':>6}  file  caption")
        for rank, (row, score) in enumerate(hits, 1):
            asset = index.assets[row]
            print(f"{rank:>4}  {score:6.3f}  {asset.file}  {asset.caption}")
            tiles.append(asset_thumbnail(index.path(row)))
            labels.append(f"{rank}. {asset.caption}\nscore {score:.3f}")
        below = sum(score < MIN_TEXT_SCORE for _, score in hits)
        if below:
            print(f"({below} of {len(hits)} below the similarity {MIN_TEXT_SCORE} retrieval asks for: "
                  f"`generate --retrieve` would not use {'them' if below > 1 else 'it'})")
    save_contact_sheet(tiles, labels, sheet)
    print(f"wrote {sheet}")
    return 0


def run_make_microworld(args) -> int:
    from sds3d.errors import InputError
    from sds3d.retrieval.library import LIBRARY_FILE
    from sds3d.validation import check_writable
    from sds3d.world import KINDS
    from sds3d.world.variants import write_microworld_library

    if args.variants < 1:
        raise InputError(f"--variants must be at least 1, got {args.variants}")
    kinds = None
    if args.kinds:
        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise InputError(f"--kinds: unknown kind {unknown[0]!r}; choose from {', '.join(KINDS)}")
    library = Path(args.library)
    if (library / LIBRARY_FILE).exists():
        raise InputError(f"{library}: already holds a library ({LIBRARY_FILE}); choose a new folder")
    check_writable(library)
    write_microworld_library(library, args.variants, seed=args.seed, kinds=kinds, progress=not args.quiet)
    count = args.variants * len(kinds or KINDS)
    print(f"wrote {count} shape variants and {LIBRARY_FILE} to {library}")
    return 0 if args.no_index else _build(library, args.quiet)
