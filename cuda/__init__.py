"""Native kernels (C++ with OpenMP on the CPU) and their pure-PyTorch reference twins.

Each kernel lives in `csrc/`, is compiled on first use by `build.load_extension` and cached; when
the build fails the caller falls back to the reference twin after one warning.
"""
