"""Tiny, randomly initialised diffusers pipelines for tests (no network, no weights).

`save_tiny_sd_pipeline(folder)` writes a Stable-Diffusion-shaped pipeline in the diffusers layout
(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), so tests exercise the real
`from_pretrained` loading path. Everything is tiny: a 2-level UNet on 8x8 latents, a 2-level VAE
(scale factor 2, so renders are resized to 16x16), a 2-layer CLIP text model of width 32 and a
byte-level BPE tokenizer whose vocabulary is the 256 byte symbols (with and without the
end-of-word marker) plus a few merges, written to vocab.json / merges.txt.

Typical use in a test module (build once per module, reuse):

    from tiny_pipelines import save_tiny_sd_pipeline

    @pytest.fixture(scope="module")
    def tiny_sd(tmp_path_factory):
        return save_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd"))

    prior = StableDiffusionPrior.from_pretrained(tiny_sd)   # 16x16 renders -> 4x8x8 latents

`save_tiny_if_pipeline(folder)` writes a DeepFloyd-IF-stage-I-shaped pipeline (pixel space, 8x8,
learned-variance UNet with 6 output channels, tiny T5 encoder).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_HIDDEN = 32          # text hidden size == UNet cross_attention_dim
TINY_MAX_LENGTH = 77      # like SD's CLIP tokenizer
TINY_SAMPLE_SIZE = 8      # UNet sample size (latent side)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode mapping (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tiny_clip_tokenizer_files(folder: str | Path, merges: list[str] | None = None) -> Path:
    """Write vocab.json + merges.txt (+ special_tokens_map / tokenizer_config) of a tiny CLIP BPE.

    The vocabulary holds every byte symbol, alone and with the "</w>" end-of-word suffix, so any
    prompt tokenizes without unknown tokens; a handful of merges make common words multi-char.
    Returns the folder (loadable with `CLIPTokenizer.from_pretrained(folder)`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    merges = merges if merges is not None else ["r e", "re d</w>", "c u", "b e</w>", "cu be</w>", "h e"]
    vocab_tokens = alphabet + [a + "</w>" for a in alphabet]
    for merge in merges:
        merged = merge.replace(" ", "")
        if merged not in vocab_tokens:
            vocab_tokens.append(merged)
    vocab_tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": TINY_MAX_LENGTH,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    return folder


def build_tiny_clip_tokenizer(folder: str | Path):
    from transformers import CLIPTokenizer

    write_tiny_clip_tokenizer_files(folder)
    tok = CLIPTokenizer.from_pretrained(str(folder))
    tok.model_max_length = TINY_MAX_LENGTH
    return tok


def build_tiny_sd_pipeline(tokenizer_dir: str | Path, prediction_type: str = "epsilon", seed: int = 0):
    """A randomly initialised StableDiffusionPipeline (safety checker and feature extractor off)."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_clip_tokenizer(tokenizer_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_SAMPLE_SIZE, in_channels=4, out_channels=4,
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_HIDDEN, attention_head_dim=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1, norm_num_groups=32, sample_size=TINY_SAMPLE_SIZE * 2)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TINY_HIDDEN, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=TINY_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    text_encoder = CLIPTextModel(text_config)
    # The SD 1.x/2.x schedule ("scaled_linear" betas 0.00085 .. 0.012), as in their scheduler configs.
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", prediction_type=prediction_type,
                              clip_sample=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_tiny_sd_pipeline(folder: str | Path, prediction_type: str = "epsilon", seed: int = 0,
                          legacy_tokenizer_files: bool = True) -> Path:
    """Build a tiny SD pipeline and `save_pretrained` it to `folder/pipeline` (diffusers layout).

    With `legacy_tokenizer_files` the tokenizer folder holds vocab.json + merges.txt instead of
    tokenizer.json, as in the SD 1.x / 2.x hub repositories (recent transformers writes only
    tokenizer.json), so loading goes through the same files as a real checkpoint.
    """
    folder = Path(folder)
    pipe = build_tiny_sd_pipeline(folder / "tokenizer_src", prediction_type=prediction_type, seed=seed)
    out = folder / "pipeline"
    pipe.save_pretrained(str(out), safe_serialization=True)
    if legacy_tokenizer_files:
        tok_dir = out / "tokenizer"
        (tok_dir / "tokenizer.json").unlink(missing_ok=True)
        write_tiny_clip_tokenizer_files(tok_dir)
    return out


# ------------------------------------------------------------------------------------------------
# DeepFloyd IF stage I (pixel space, learned variance, T5)
# ------------------------------------------------------------------------------------------------

def build_tiny_t5_tokenizer():
    """A T5 (Unigram) tokenizer from an in-memory vocabulary: the special tokens, the letters and
    digits with and without the word-start marker, and a few whole words (needs transformers >= 5,
    whose T5Tokenizer accepts `vocab=[(piece, score), ...]`; older versions need a spiece.model)."""
    from transformers import T5Tokenizer

    chars = "abcdefghijklmnopqrstuvwxyz0123456789,.'-"
    words = ["a", "red", "blue", "cube", "sphere", "mug", "view", "front", "side", "back"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -3.0) for w in words]
    vocab += [(c, -5.0) for c in chars] + [("\u2581" + c, -5.5) for c in chars]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    tok.model_max_length = TINY_MAX_LENGTH
    return tok


def build_tiny_if_pipeline(seed: int = 0):
    """A randomly initialised IFPipeline (stage I) shaped like the diffusers test dummies: 8x8 RGB,
    a UNet with out_channels 6 (eps + learned variance), text projection and added-KV attention."""
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = build_tiny_t5_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_SAMPLE_SIZE, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        in_channels=3, out_channels=6, cross_attention_dim=TINY_HIDDEN, encoder_hid_dim=TINY_HIDDEN,
        attention_head_dim=8, addition_embed_type="text", addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift", act_fn="gelu")
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=TINY_HIDDEN, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=0))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", thresholding=True,
                              dynamic_thresholding_ratio=0.95, sample_max_value=1.0, prediction_type="epsilon",
                              variance_type="learned_range")
    return IFPipeline(tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, scheduler=scheduler,
                      safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)


def save_tiny_if_pipeline(folder: str | Path, seed: int = 0) -> Path:
    """Build a tiny IF stage-I pipeline and `save_pretrained` it to `folder/pipeline`."""
    out = Path(folder) / "pipeline"
    build_tiny_if_pipeline(seed=seed).save_pretrained(str(out), safe_serialization=True)
    return out
