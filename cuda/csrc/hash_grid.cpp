// Multiresolution hash encoding (Instant-NGP) on the CPU (C++ / OpenMP): forward, gradient w.r.t.
// the tables, gradient w.r.t. the points (a vector-Jacobian product, for normals from a density
// gradient) and the backward of that product (so losses on such normals train the tables).
// The per-(point, level) math is in hash_grid_math.h; the PyTorch twin is cuda/_torch_hash_grid.py.
//
// Layout: `tables` [P, F] holds the levels one after another, level l in rows
// [offsets[l], offsets[l + 1]); `resolutions[l]` cells per axis; `hashed[l]` says whether the level
// uses the spatial hash (else dense indexing). Encodings are [N, L * F], level-major.
//
// Every scatter into the tables runs one level per thread, points in order, so results do not
// depend on the number of threads (bit-reproducible); the other passes write disjoint outputs.
//
// A plain C ABI over raw pointers (no torch headers, so it builds in about a second): the caller
// (cuda/_native_hash_grid.py) checks the layout, shapes and dtypes and allocates the outputs.
#include "openmp.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "hash_grid_math.h"

using namespace sds3d::hashgrid;

namespace {

constexpr int64_t kMaxFeatures = 32;  // features per level the kernels accumulate on the stack

struct Level {
  int32_t resolution;
  int64_t offset;
  uint32_t size;
  bool hashed;
};

std::vector<Level> make_levels(const int64_t* resolutions, const int64_t* offsets, const int64_t* hashed,
                               int64_t L) {
  std::vector<Level> levels(L);
  for (int64_t l = 0; l < L; ++l)
    levels[l] = {static_cast<int32_t>(resolutions[l]), offsets[l], static_cast<uint32_t>(offsets[l + 1] - offsets[l]),
                 hashed[l] != 0};
  return levels;
}

// Calls fn with a compile-time feature count for the common sizes (0 = use the runtime count).
template <typename Fn>
void dispatch_features(int64_t F, Fn&& fn) {
  switch (F) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    case 8: fn(std::integral_constant<int, 8>{}); break;
    default: fn(std::integral_constant<int, 0>{}); break;
  }
}

// Points are processed in blocks: first every corner row of the block is computed and prefetched,
// then read, so the cache misses of the (mostly random) table rows overlap.
constexpr int64_t kBlock = 16;

struct BlockCorners {
  Cell cells[kBlock];
  uint32_t rows[kBlock][8];
  float weights[kBlock][8];  // trilinear weights, or directional derivatives of them
};

// Corners of points [begin, begin + count) in level lv, prefetching their rows (rw = 1: for writing).
// With v != nullptr the weights are the derivatives along v[n] (for the points-VJP backward).
template <int kRw>
void block_corners(const float* x, const float* v, int64_t begin, int64_t count, const Level& lv,
                   const float* rows_base, int64_t nf, BlockCorners& out) {
  for (int64_t i = 0; i < count; ++i) {
    const int64_t n = begin + i;
    const Cell& cell = out.cells[i] = locate(x + 3 * n, lv.resolution);
    cell_corners(cell, lv.resolution, lv.size, lv.hashed, out.rows[i], out.weights[i]);
    if (v != nullptr) {
      float grads[8][3];
      cell_weight_gradients(cell, lv.resolution, grads);
      const float* vn = v + 3 * n;
      for (int k = 0; k < 8; ++k) out.weights[i][k] = vn[0] * grads[k][0] + vn[1] * grads[k][1] + vn[2] * grads[k][2];
    }
    for (int k = 0; k < 8; ++k) __builtin_prefetch(rows_base + int64_t(out.rows[i][k]) * nf, kRw);
  }
}

// out[n, l F + f] = sum_k weight_k * table[row_k, f]: the encoding (v == nullptr) or the
// derivative of the points-VJP w.r.t. its grad_out (weights = derivatives along v).
void gather(const float* x, const float* v, const float* table, float* out, int64_t N, int64_t F,
            const std::vector<Level>& levels) {
  const int64_t L = levels.size();
  dispatch_features(F, [&](auto fc) {
    constexpr int kF = decltype(fc)::value;
    const int64_t nf = kF ? kF : F;
#pragma omp parallel
    {
      BlockCorners block;
      for (int64_t l = 0; l < L; ++l) {
        const Level lv = levels[l];
        const float* level_table = table + lv.offset * nf;
#pragma omp for schedule(static) nowait
        for (int64_t b = 0; b < N; b += kBlock) {
          const int64_t m = std::min(kBlock, N - b);
          block_corners<0>(x, v, b, m, lv, level_table, nf, block);
          for (int64_t i = 0; i < m; ++i) {
            float acc[kMaxFeatures];
            for (int64_t f = 0; f < nf; ++f) acc[f] = 0.f;
            for (int k = 0; k < 8; ++k) {
              const float w = block.weights[i][k];
              const float* row = level_table + int64_t(block.rows[i][k]) * nf;
              for (int64_t f = 0; f < nf; ++f) acc[f] += w * row[f];
            }
            float* dst = out + (b + i) * L * nf + l * nf;
            for (int64_t f = 0; f < nf; ++f) dst[f] = acc[f];
          }
        }
      }
    }
  });
}

// grad_tables[row_k, f] += weight_k * g[n, l F + f]: one level per thread, points in order.
void scatter(const float* x, const float* v, const float* g, float* grad_tables, int64_t N, int64_t F,
             const std::vector<Level>& levels) {
  const int64_t L = levels.size();
  dispatch_features(F, [&](auto fc) {
    constexpr int kF = decltype(fc)::value;
    const int64_t nf = kF ? kF : F;
#pragma omp parallel
    {
      BlockCorners block;
#pragma omp for schedule(dynamic, 1)
      for (int64_t l = 0; l < L; ++l) {
        const Level lv = levels[l];
        float* level_grad = grad_tables + lv.offset * nf;
        for (int64_t b = 0; b < N; b += kBlock) {
          const int64_t m = std::min(kBlock, N - b);
          block_corners<1>(x, v, b, m, lv, level_grad, nf, block);
          for (int64_t i = 0; i < m; ++i) {
            const float* gn = g + (b + i) * L * nf + l * nf;
            for (int k = 0; k < 8; ++k) {
              const float w = block.weights[i][k];
              float* row = level_grad + int64_t(block.rows[i][k]) * nf;
              for (int64_t f = 0; f < nf; ++f) row[f] += w * gn[f];
            }
          }
        }
      }
    }
  });
}

}  // namespace

// Every call: points [N, 3], tables [P, F] float32, layout resolutions [L], offsets [L + 1], hashed [L] int64.
#define LAYOUT const int64_t *resolutions, const int64_t *offsets, const int64_t *hashed, int64_t L

// -> encoding out [N, L * F].
extern "C" void sds3d_hash_grid_forward(const float* points, int64_t N, const float* tables, int64_t F, LAYOUT,
                                        float* out) {
  gather(points, nullptr, tables, out, N, F, make_levels(resolutions, offsets, hashed, L));
}

// d(loss)/d(tables) grad_tables [P, F] (zero-filled by the caller) from d(loss)/d(encoding) grad_out [N, L * F].
extern "C" void sds3d_hash_grid_backward_tables(const float* grad_out, const float* points, int64_t N, int64_t F,
                                                LAYOUT, float* grad_tables) {
  scatter(points, nullptr, grad_out, grad_tables, N, F, make_levels(resolutions, offsets, hashed, L));
}

// Vector-Jacobian product with the points: sum over (l, f) of grad_out[n, l F + f] *
// d(encoding[n, l F + f]) / d(points[n]) -> grad_points [N, 3] (zero-filled by the caller). Levels in
// order per point (deterministic).
extern "C" void sds3d_hash_grid_points_vjp(const float* g, const float* x, int64_t N, const float* table, int64_t F,
                                           LAYOUT, float* gp) {
  const std::vector<Level> levels = make_levels(resolutions, offsets, hashed, L);
  dispatch_features(F, [&](auto fc) {
    constexpr int kF = decltype(fc)::value;
    const int64_t nf = kF ? kF : F;
#pragma omp parallel
    {
      BlockCorners block;
      for (int64_t l = 0; l < L; ++l) {
        const Level lv = levels[l];
        const float* level_table = table + lv.offset * nf;
#pragma omp for schedule(static) nowait
        for (int64_t b = 0; b < N; b += kBlock) {
          const int64_t m = std::min(kBlock, N - b);
          block_corners<0>(x, nullptr, b, m, lv, level_table, nf, block);
          for (int64_t i = 0; i < m; ++i) {
            const int64_t n = b + i;
            const float* gn = g + n * L * nf + l * nf;
            float grads[8][3];
            cell_weight_gradients(block.cells[i], lv.resolution, grads);
            for (int k = 0; k < 8; ++k) {
              const float* row = level_table + int64_t(block.rows[i][k]) * nf;
              float s = 0.f;
              for (int64_t f = 0; f < nf; ++f) s += gn[f] * row[f];
              for (int d = 0; d < 3; ++d) gp[3 * n + d] += s * grads[k][d];
            }
          }
        }
      }
    }
  });
}

// Backward of points_vjp for an upstream gradient v [N, 3]: d/d grad_out -> gg [N, L * F] and d/d tables
// -> gt [P, F] (zero-filled by the caller); either may be null when not requested.
extern "C" void sds3d_hash_grid_points_vjp_backward(const float* v, const float* grad_out, const float* points,
                                                    int64_t N, const float* tables, int64_t F, LAYOUT, float* gg,
                                                    float* gt) {
  const std::vector<Level> levels = make_levels(resolutions, offsets, hashed, L);
  if (gg) gather(points, v, tables, gg, N, F, levels);
  if (gt) scatter(points, v, grad_out, gt, N, F, levels);
}
