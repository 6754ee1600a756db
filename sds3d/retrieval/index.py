"""The index of an asset library: caption and render embeddings, built incrementally.

`build_index(folder)` writes `<folder>/library_index/`:

- `embeddings.safetensors`: float32 `text` [N, 384] (captions, `embedders.TextEmbedder`),
  `image_views` [N, V, 256] (each asset rendered from the V = 12 views of
  `library.VIEW_AZIMUTHS`, `embedders.ImageEmbedder`), `image` [N, 256] (their mean, unit length)
  and `front_probability` [N, V] (the evaluator's view head: how much each view looks like a front);
- `captions.ivf`, from `search.IVF_MIN_SIZE` assets when faiss is installed: a trained faiss IVF
  index of the caption embeddings, which searches then use (smaller libraries are searched exactly);
- `manifest.json`: the format version, the text encoder's and the image embedder's names, the
  views, and per asset (row order) its file, caption, tags, content hash (`library.content_hash`)
  and type (mesh | gaussians); plus the sha256 of the embeddings file.

Built again, it renders and embeds only assets whose content hash changed or that are new, and
embeds only captions that changed (all of them, and no render, after a change of text encoder);
assets that cannot be read are skipped with a warning naming them (`library.SkippedAssetWarning`).
Both files are written to temporary names and moved into place, the manifest last.
`LibraryIndex.load(folder)` refuses (InputError: rebuild) an index of another format version, text
encoder, image embedder or view set, or one whose embeddings do not match its manifest.

Reference: Seo et al. 2024, "Retrieval-Augmented Score Distillation for Text-to-3D Generation"
(ReDream), arXiv:2402.02972.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sds3d.atomic import atomic_write
from sds3d.errors import InputError, first_line

from . import search as search_module

from .library import (INDEX_DIR, IMAGE_RESOLUTION, RENDER_RESOLUTION, VIEW_AZIMUTHS, VIEW_ELEVATION, VIEW_FOVY,
                      VIEW_RADIUS, LibraryEntry, content_hash, is_gaussian_ply, library_dir, load_asset, read_entries,
                      render_views, uncaptioned_files, warn_skipped)

INDEX_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
EMBEDDINGS_FILE = "embeddings.safetensors"
CAPTION_IVF_FILE = "captions.ivf"
VIEWS = {"elevation": VIEW_ELEVATION, "azimuths": list(VIEW_AZIMUTHS), "radius": VIEW_RADIUS, "fovy": VIEW_FOVY,
         "render_resolution": RENDER_RESOLUTION, "resolution": IMAGE_RESOLUTION}


@dataclass
class IndexedAsset:
    """One row of the index."""

    file: str
    caption: str
    tags: object
    sha256: str
    type: str  # "mesh" | "gaussians"


@dataclass
class BuildReport:
    """What `build_index` did: files rendered and embedded, files whose embeddings were reused,
    and (file, reason) of the files left out."""

    rendered: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    index_dir: Path | None = None


def index_dir(library: str | Path) -> Path:
    return Path(library) / INDEX_DIR


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class LibraryIndex:
    """A loaded index: `folder`, `assets` (rows), and tensors `text` [N, 384], `image` [N, D],
    `image_views` [N, V, D], `front_probability` [N, V]; `azimuths` of the V views (degrees)."""

    def __init__(self, folder: Path, manifest: dict, tensors: dict[str, torch.Tensor]):
        self.folder = Path(folder)
        self.manifest = manifest
        self.assets = [IndexedAsset(**row) for row in manifest["assets"]]
        self.text = tensors["text"]
        self.image = tensors["image"]
        self.image_views = tensors["image_views"]
        self.front_probability = tensors["front_probability"]
        self.azimuths = tuple(float(a) for a in manifest["views"]["azimuths"])
        self._caption_searches: dict[str, object] = {}

    def caption_search(self, method: str = "auto"):
        """The `search.VectorSearch` over the caption embeddings (made once per method and kept).
        "auto": the IVF index saved with the library when there is one (and faiss), else exact
        search (faiss flat, or NumPy without faiss); "ivf" without a saved one trains it here."""
        from .search import VectorSearch, faiss_available

        if method not in self._caption_searches:
            saved = self.manifest.get("caption_ivf")
            if method in ("auto", "ivf") and saved and faiss_available():
                import faiss

                path = index_dir(self.folder) / saved["file"]
                if not path.is_file() or _sha256(path) != saved["sha256"]:
                    raise InputError(f"{path}: missing or does not match {MANIFEST_FILE}; rebuild it with "
                                     f"`sds3d library build {self.folder}`")
                search = VectorSearch.from_faiss(self.text.numpy(), faiss.read_index(str(path)))
            else:
                search = VectorSearch(self.text.numpy(), ("flat" if faiss_available() else "numpy")
                                      if method == "auto" else method)
            self._caption_searches[method] = search
        return self._caption_searches[method]

    def __len__(self) -> int:
        return len(self.assets)

    def path(self, row: int) -> Path:
        return self.folder / self.assets[row].file

    @classmethod
    def load(cls, library: str | Path, text_encoder_name: str | None = None,
             image_embedder_name: str | None = None) -> "LibraryIndex":
        """The index of `library`, checked against this version's format and views and, when given,
        the names of the embedders the caller will query it with. InputError (one line, saying to run
        `sds3d library build`) for a missing, foreign, stale or damaged index."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from .embedders import TEXT_ENCODER_NAME

        folder = library_dir(library)
        directory = index_dir(folder)
        rebuild = f"rebuild it with `sds3d library build {folder}`"
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise InputError(f"{folder}: the library has no index yet; build it with `sds3d library build {folder}`")
        try:
            manifest = json.loads(manifest_path.read_text())
            version = manifest["format_version"]
            assets = manifest["assets"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f"{manifest_path}: not a library index manifest; {rebuild}") from None
        if version != INDEX_FORMAT_VERSION:
            raise InputError(f"{manifest_path}: index format version {version}, this sds3d reads version "
                             f"{INDEX_FORMAT_VERSION}; {rebuild}")
        wanted_text = text_encoder_name or TEXT_ENCODER_NAME
        if manifest.get("text_encoder") != wanted_text:
            raise InputError(f"{manifest_path}: built with the text encoder {manifest.get('text_encoder')!r}, "
                             f"not {wanted_text!r}; {rebuild}")
        if image_embedder_name is not None and manifest.get("image_embedder") != image_embedder_name:
            raise InputError(f"{manifest_path}: built with the image embedder {manifest.get('image_embedder')!r}, "
                             f"not {image_embedder_name!r}; {rebuild}")
        if manifest.get("views") != VIEWS:
            raise InputError(f"{manifest_path}: rendered from other views than this sds3d uses; {rebuild}")
        embeddings = directory / manifest.get("embeddings", EMBEDDINGS_FILE)
        if not embeddings.is_file() or _sha256(embeddings) != manifest.get("embeddings_sha256"):
            raise InputError(f"{embeddings}: missing or does not match {MANIFEST_FILE}; {rebuild}")
        try:
            tensors = load_file(str(embeddings))
        except (SafetensorError, OSError):
            raise InputError(f"{embeddings}: not a readable embeddings file; {rebuild}") from None
        if not assets:
            raise InputError(f"{folder}: the index holds no assets (every asset was skipped when it was built)")
        return cls(folder, manifest, tensors)


def _read_previous(folder: Path, text_name: str, image_name: str) -> tuple[dict, dict]:
    """Reusable rows of an existing index: ({(file, sha256): row tensors} when it was rendered and
    embedded the same way, {caption: text embedding} when its text encoder is `text_name`); empty
    when there is none. A new text encoder re-embeds the captions and keeps the renders."""
    try:
        manifest = json.loads((index_dir(folder) / MANIFEST_FILE).read_text())
        previous = LibraryIndex.load(folder, manifest["text_encoder"], image_name)
    except (InputError, OSError, json.JSONDecodeError, KeyError, TypeError):
        return {}, {}
    images, captions = {}, {}
    for row, asset in enumerate(previous.assets):
        images[(asset.file, asset.sha256)] = (asset.type, previous.image_views[row], previous.front_probability[row])
        if manifest["text_encoder"] == text_name:
            captions[asset.caption] = previous.text[row]
    return images, captions


def build_index(library: str | Path, text_embedder=None, image_embedder=None, progress: bool = True) -> BuildReport:
    """Index (or re-index) the library in `library` (see the module docstring) -> `BuildReport`.
    InputError for a missing or empty library, or when no asset at all could be read."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from .embedders import ImageEmbedder, TextEmbedder

    folder = library_dir(library)
    entries = read_entries(folder)
    text_embedder = text_embedder or TextEmbedder()
    image_embedder = image_embedder or ImageEmbedder()
    report = BuildReport(index_dir=index_dir(folder))
    for file in uncaptioned_files(folder, entries):
        report.skipped.append((file, f"not listed in {folder / 'library.jsonl'} (add a line with its caption)"))
        warn_skipped(file, report.skipped[-1][1])
    previous_images, previous_captions = _read_previous(folder, text_embedder.name, image_embedder.name)

    kept: list[tuple[LibraryEntry, str, str]] = []
    views, fronts = [], []
    for entry in tqdm(entries, desc=f"index {folder.name}", unit="asset", disable=not progress):
        path = entry.path(folder)
        try:
            if not path.is_file():
                raise InputError(f"{path}: no such file")
            digest = content_hash(path)
            if (entry.file, digest) in previous_images:
                kind, view_features, front = previous_images[(entry.file, digest)]
                report.reused.append(entry.file)
            else:
                kind = "gaussians" if is_gaussian_ply(path) else "mesh"
                images = render_views(load_asset(path))
                if not torch.isfinite(images).all():
                    raise InputError(f"{path}: renders are NaN or infinite")
                view_features, front = image_embedder.embed(images), image_embedder.front_probability(images)
                report.rendered.append(entry.file)
        except Exception as error:  # any unreadable asset is left out; the build goes on
            reason = first_line(error)
            reason = reason[len(str(path)) + 2:] if reason.startswith(f"{path}: ") else reason
            report.skipped.append((entry.file, reason))
            warn_skipped(entry.file, reason)
            continue
        kept.append((entry, digest, kind))
        views.append(view_features)
        fronts.append(front)
    if not kept:
        raise InputError(f"{folder}: no asset of the library could be read (each was skipped with a warning)")

    captions = [entry.caption for entry, _, _ in kept]
    missing = list(dict.fromkeys(c for c in captions if c not in previous_captions))
    new_text = dict(zip(missing, text_embedder.embed(missing))) if missing else {}
    text = torch.stack([new_text[c] if c in new_text else previous_captions[c] for c in captions])
    image_views = torch.stack(views).float()
    tensors = {"text": text.float().contiguous(), "image_views": image_views.contiguous(),
               "image": torch.nn.functional.normalize(image_views.mean(1), dim=-1).contiguous(),
               "front_probability": torch.stack(fronts).float().contiguous()}
    directory = report.index_dir
    directory.mkdir(exist_ok=True)
    atomic_write(directory / EMBEDDINGS_FILE, lambda path: save_file(tensors, str(path)))
    caption_ivf = None
    if len(kept) >= search_module.IVF_MIN_SIZE and search_module.faiss_available():
        import faiss

        trained = search_module.VectorSearch(tensors["text"].numpy(), "ivf")
        atomic_write(directory / CAPTION_IVF_FILE, lambda path: faiss.write_index(trained.index, str(path)))
        caption_ivf = {"file": CAPTION_IVF_FILE, "sha256": _sha256(directory / CAPTION_IVF_FILE)}
    manifest = {"format_version": INDEX_FORMAT_VERSION, "text_encoder": text_embedder.name,
                "image_embedder": image_embedder.name, "views": VIEWS, "embeddings": EMBEDDINGS_FILE,
                "embeddings_sha256": _sha256(directory / EMBEDDINGS_FILE), "caption_ivf": caption_ivf,
                "assets": [{"file": entry.file, "caption": entry.caption, "tags": entry.tags, "sha256": digest,
                            "type": kind} for entry, digest, kind in kept]}
    atomic_write(directory / MANIFEST_FILE, lambda path: path.write_text(json.dumps(manifest, indent=1)))
    if caption_ivf is None:
        (directory / CAPTION_IVF_FILE).unlink(missing_ok=True)  # from a larger library, no longer used
    return report


def search_captions(index: LibraryIndex, query: torch.Tensor, k: int, method: str = "auto") -> list[tuple[int, float]]:
    """The k rows whose caption embeddings are nearest `query` [384] (unit): [(row, cosine)], best first."""
    scores, ids = index.caption_search(method).search(query.reshape(1, -1).numpy(), k)
    return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]


__all__ = ["INDEX_FORMAT_VERSION", "MANIFEST_FILE", "EMBEDDINGS_FILE", "CAPTION_IVF_FILE", "VIEWS", "IndexedAsset", "BuildReport",
           "LibraryIndex", "index_dir", "build_index", "search_captions"]
