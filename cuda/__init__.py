"""Native kernels, mostly for the CPU despite the folder's name, and their pure-PyTorch reference twins.

`csrc/` holds the CPU kernels (C++ with OpenMP, `*.cpp`: Gaussian rasterizer, mesh visibility, hash
encoding) and one CUDA kernel (`hash_grid.cu`, the hash encoding's GPU twin); the `*.h` headers hold
the math both share. The CPU kernels are shared libraries with a plain C ABI (no torch headers, so
each compiles in seconds), compiled on first use by `build.load_extension`, cached, and called through
ctypes by `_native_*.py`, which check the tensors and allocate the outputs; when the build fails the
caller falls back to the reference twin after one warning.
"""
