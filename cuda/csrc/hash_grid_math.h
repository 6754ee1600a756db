// Per-(point, level) math of the multiresolution hash encoding (Instant-NGP), shared by the C++
// kernel (hash_grid.cpp) and its CUDA twin (hash_grid.cu) so the CPU tests exercise the same math.
// The PyTorch reference is cuda/_torch_hash_grid.py.
//
// Level l has resolution R (cells per axis) and R + 1 grid vertices per axis. A point x in [0, 1]^3
// (clamped) sits at p = x * R in cell c = min(floor(p), R - 1) with fraction f = p - c, so x = 1
// lands in the last cell with f = 1. A vertex v maps to a table row: densely v.x + (R+1) (v.y +
// (R+1) v.z) when (R+1)^3 rows fit in the level's table, else the spatial hash
// (v.x * 1 ^ v.y * 2654435761 ^ v.z * 805459861) mod T (uint32 arithmetic, T a power of two).
// Corner k (0..7) of a cell is the vertex c + (k & 1, (k >> 1) & 1, (k >> 2) & 1); its trilinear
// weight is the product over axes of f or 1 - f.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SDS3D_HG_HD __host__ __device__ inline
#else
#define SDS3D_HG_HD inline
#endif

namespace sds3d {
namespace hashgrid {

constexpr uint32_t kPrime1 = 2654435761u;
constexpr uint32_t kPrime2 = 805459861u;

// Where a point falls in one level.
struct Cell {
  int32_t base[3];  // lower vertex of the cell, in [0, R - 1]
  float frac[3];    // position inside the cell, in [0, 1]
  bool inside[3];   // 0 <= x <= 1 on that axis: the clamp passes gradients only there
};

SDS3D_HG_HD Cell locate(const float* x, int32_t resolution) {
  Cell cell;
  for (int d = 0; d < 3; ++d) {
    const float v = x[d];
    cell.inside[d] = v >= 0.f && v <= 1.f;
    const float p = (v < 0.f ? 0.f : (v > 1.f ? 1.f : v)) * static_cast<float>(resolution);
    int32_t c = static_cast<int32_t>(p);  // p >= 0, so truncation is floor
    if (c > resolution - 1) c = resolution - 1;
    cell.base[d] = c;
    cell.frac[d] = p - static_cast<float>(c);
  }
  return cell;
}

// Rows (within the level) and trilinear weights of the 8 corners of the cell. The dense row
// v.x + (R+1) v.y + (R+1)^2 v.z and the hash are computed per axis once and combined per corner.
SDS3D_HG_HD void cell_corners(const Cell& cell, int32_t resolution, uint32_t table_size, bool hashed,
                              uint32_t rows[8], float weights[8]) {
  const uint32_t bx = static_cast<uint32_t>(cell.base[0]), by = static_cast<uint32_t>(cell.base[1]),
                 bz = static_cast<uint32_t>(cell.base[2]);
  const uint32_t side = static_cast<uint32_t>(resolution) + 1u;
  const uint32_t my = hashed ? kPrime1 : side, mz = hashed ? kPrime2 : side * side;
  const uint32_t ax[2] = {bx, bx + 1u}, ay[2] = {by * my, (by + 1u) * my}, az[2] = {bz * mz, (bz + 1u) * mz};
  const float wx[2] = {1.f - cell.frac[0], cell.frac[0]}, wy[2] = {1.f - cell.frac[1], cell.frac[1]},
              wz[2] = {1.f - cell.frac[2], cell.frac[2]};
  for (int k = 0; k < 8; ++k) {
    const int i = k & 1, j = (k >> 1) & 1, l = (k >> 2) & 1;
    rows[k] = hashed ? (ax[i] ^ ay[j] ^ az[l]) & (table_size - 1u) : ax[i] + ay[j] + az[l];
    weights[k] = wx[i] * wy[j] * wz[l];
  }
}

// d(weight of corner k) / dx for the 8 corners, x in [0, 1]^3 (0 on axes where x was clamped).
SDS3D_HG_HD void cell_weight_gradients(const Cell& cell, int32_t resolution, float grads[8][3]) {
  const float r = static_cast<float>(resolution);
  const float wx[2] = {1.f - cell.frac[0], cell.frac[0]}, wy[2] = {1.f - cell.frac[1], cell.frac[1]},
              wz[2] = {1.f - cell.frac[2], cell.frac[2]};
  const float dx = cell.inside[0] ? r : 0.f, dy = cell.inside[1] ? r : 0.f, dz = cell.inside[2] ? r : 0.f;
  const float gx[2] = {-dx, dx}, gy[2] = {-dy, dy}, gz[2] = {-dz, dz};
  for (int k = 0; k < 8; ++k) {
    const int i = k & 1, j = (k >> 1) & 1, l = (k >> 2) & 1;
    grads[k][0] = gx[i] * wy[j] * wz[l];
    grads[k][1] = wx[i] * gy[j] * wz[l];
    grads[k][2] = wx[i] * wy[j] * gz[l];
  }
}

}  // namespace hashgrid
}  // namespace sds3d
