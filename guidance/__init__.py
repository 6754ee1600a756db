"""Diffusion priors (the embedded micro-world prior, Stable Diffusion, ...), text encoders and
score-distillation guidance variants."""
