"""LoRA adapters on a diffusers UNet (through diffusers' PEFT adapter API) and camera conditioning.

`UNetLoRA(unet, rank)` adds a PEFT LoRA adapter (`to_q`, `to_k`, `to_v`, `to_out.0` of every
attention block; B = 0 at init, so the adapted UNet starts as the base UNet) plus a camera MLP whose
output is added to the UNet's timestep embedding. Both are *off* except inside `with lora.active(c):`,
so the same UNet object can serve a frozen prior (adapter disabled, bit-identical to the base UNet)
and a trainable estimator (adapter enabled). Camera condition: the flattened camera-to-world matrix
[B, 16] (`camera_condition`); a zero row is the "no camera" condition.

Sharing the UNet costs no extra memory beyond the LoRA weights; the price is that a disabled PEFT
layer adds a Python branch per attention projection, that the UNet must not be evaluated from
another thread while an adapter is active, and that the LoRA weights inside the prior's UNet keep
requires_grad=True (the base weights stay frozen).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import nn

from sds3d.guidance.priors.batch_threads import current_slice

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def camera_condition(cameras) -> torch.Tensor:
    """Cameras -> flattened camera-to-world matrices [B, 16] (OpenCV axes, as `Cameras.camtoworlds`)."""
    return cameras.camtoworlds.reshape(len(cameras), 16).float()


class CameraEmbedding(nn.Module):
    """c [B, 16] -> [B, dim] by MLP(16 -> dim, SiLU, dim -> dim); the last layer starts at zero, so a
    fresh embedding adds exactly nothing to the timestep embedding."""

    def __init__(self, dim: int, in_features: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, camera: torch.Tensor) -> torch.Tensor:
        return self.net(camera)


def timestep_embedding_dim(unet) -> int:
    """Width of a diffusers UNet's timestep embedding (1280 for SD 1.x / 2.x)."""
    return int(unet.time_embedding.linear_2.out_features)


class UNetLoRA:
    """A named LoRA adapter on `unet` (float32 weights whatever the UNet's dtype) plus a
    `CameraEmbedding`; `parameters()` are what the estimator trains."""

    def __init__(self, unet, rank: int = 4, target_modules: tuple[str, ...] = LORA_TARGETS):
        from peft import LoraConfig

        self.unet = unet
        existing = set(getattr(unet, "peft_config", {}) or {})
        self.name = next(f"vsd_{i}" for i in range(len(existing) + 1) if f"vsd_{i}" not in existing)
        with warnings.catch_warnings():  # several named adapters on one UNet are intended here
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(target_modules),
                                        init_lora_weights=True), adapter_name=self.name)
        self._lora = {key: param for key, param in self._named_lora_parameters()}
        for param in self._lora.values():
            param.data = param.data.float()
        self._switch_off()
        device = next(unet.parameters()).device
        self.camera = CameraEmbedding(timestep_embedding_dim(unet)).to(device)

    def _named_lora_parameters(self):
        """(key without the adapter name, parameter), in a fixed order."""
        tag = f".{self.name}."
        for key, param in self.unet.named_parameters():
            if tag in key:
                yield key.replace(tag, "."), param

    def parameters(self) -> list[nn.Parameter]:
        return list(self._lora.values()) + list(self.camera.parameters())

    @contextmanager
    def active(self, camera: torch.Tensor):
        """Within the block the UNet runs with this adapter and adds `CameraEmbedding(camera)`
        ([B, 16], batch = the UNet call's batch) to its timestep embedding; a call split over
        threads (`batch_threads`) adds each slice its own rows."""
        embedding = self.camera(camera)

        def add_camera(module, inputs, output):
            return output + embedding[current_slice()].to(output.dtype)

        hook = self.unet.time_embedding.register_forward_hook(add_camera)
        self.unet.set_adapter(self.name)
        self.unet.enable_adapters()
        try:
            yield
        finally:
            self._switch_off()
            hook.remove()

    def _switch_off(self) -> None:
        """Disable the adapters; PEFT also clears requires_grad of every LoRA weight then, which
        would drop the gradients of a loss built inside `active()` but backpropagated after it."""
        self.unet.disable_adapters()
        for param in self._lora.values():
            param.requires_grad_(True)

    def state_dict(self) -> dict:
        return {"lora": {key: param.detach().clone() for key, param in self._lora.items()},
                "camera": {key: value.detach().clone() for key, value in self.camera.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        mismatch = set(self._lora) ^ set(state["lora"])
        if mismatch:
            raise KeyError(f"LoRA state does not match this UNet's adapter: {sorted(mismatch)[:3]} ...")
        with torch.no_grad():
            for key, param in self._lora.items():
                param.copy_(state["lora"][key])
        self.camera.load_state_dict(state["camera"])

    def remove(self) -> None:
        """Delete the adapter from the UNet (the camera embedding is simply dropped)."""
        self.unet.delete_adapters(self.name)
        self._lora = {}
