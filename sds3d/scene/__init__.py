"""Scenes users bring: captures in the nerfstudio data format, foreign 3DGS PLYs and meshes, and the
photometric fit that turns a capture into 3D Gaussians."""
