"""Editing scores: gradients that move a rendered view from a source prompt towards a target prompt
while keeping what the prompts share (DDS, PDS, Stable Score Distillation, and SDS as the baseline)."""
