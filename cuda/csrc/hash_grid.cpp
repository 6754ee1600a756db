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
// Only the headers this file needs (not <torch/extension.h>): the first build takes a fraction as long.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/utils/pybind.h>
#include <omp.h>

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

std::vector<Level> read_layout(const at::Tensor& tables, const std::vector<int64_t>& resolutions,
                               const std::vector<int64_t>& offsets, const std::vector<int64_t>& hashed) {
  const size_t L = resolutions.size();
  TORCH_CHECK(tables.size(1) >= 1 && tables.size(1) <= kMaxFeatures, "hash grid: 1 to 32 features per level");
  TORCH_CHECK(L > 0 && offsets.size() == L + 1 && hashed.size() == L,
              "hash grid layout: need L resolutions, L + 1 offsets, L flags");
  TORCH_CHECK(offsets[0] == 0 && offsets[L] == tables.size(0), "hash grid layout: offsets must span the table rows");
  std::vector<Level> levels(L);
  for (size_t l = 0; l < L; ++l) {
    const int64_t size = offsets[l + 1] - offsets[l], side = resolutions[l] + 1;
    TORCH_CHECK(resolutions[l] >= 1, "hash grid layout: resolutions must be >= 1");
    if (hashed[l]) {
      TORCH_CHECK(size > 0 && (size & (size - 1)) == 0 && size <= (int64_t(1) << 31),
                  "hashed levels need a power-of-two table size up to 2^31");
    } else {
      TORCH_CHECK(size == side * side * side, "dense levels need (resolution + 1)^3 rows");
    }
    levels[l] = {static_cast<int32_t>(resolutions[l]), offsets[l], static_cast<uint32_t>(size), hashed[l] != 0};
  }
  return levels;
}

void check_float(const at::Tensor& t, const char* name, int64_t dim1) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), name,
              " must be a contiguous float32 CPU tensor");
  TORCH_CHECK(t.dim() == 2 && (dim1 < 0 || t.size(1) == dim1), name, " has the wrong shape");
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

struct Inputs {
  std::vector<Level> levels;
  int64_t N, L, F;
};

Inputs check_inputs(const at::Tensor& points, const at::Tensor& tables, const std::vector<int64_t>& resolutions,
                    const std::vector<int64_t>& offsets, const std::vector<int64_t>& hashed) {
  check_float(points, "points", 3);
  check_float(tables, "tables", -1);
  Inputs in{read_layout(tables, resolutions, offsets, hashed), points.size(0), 0, tables.size(1)};
  in.L = static_cast<int64_t>(in.levels.size());
  return in;
}

void check_per_point(const at::Tensor& t, const char* name, int64_t width, const Inputs& in) {
  check_float(t, name, width);
  TORCH_CHECK(t.size(0) == in.N, name, " must have one row per point");
}

}  // namespace

// points [N, 3], tables [P, F] -> encoding [N, L * F].
at::Tensor forward(at::Tensor points, at::Tensor tables, std::vector<int64_t> resolutions,
                      std::vector<int64_t> offsets, std::vector<int64_t> hashed) {
  const Inputs in = check_inputs(points, tables, resolutions, offsets, hashed);
  auto out = at::empty({in.N, in.L * in.F}, points.options());
  gather(points.data_ptr<float>(), nullptr, tables.data_ptr<float>(), out.data_ptr<float>(), in.N, in.F, in.levels);
  return out;
}

// d(loss)/d(tables) [P, F] from d(loss)/d(encoding) [N, L * F].
at::Tensor backward_tables(at::Tensor grad_out, at::Tensor points, at::Tensor tables,
                              std::vector<int64_t> resolutions, std::vector<int64_t> offsets,
                              std::vector<int64_t> hashed) {
  const Inputs in = check_inputs(points, tables, resolutions, offsets, hashed);
  check_per_point(grad_out, "grad_out", in.L * in.F, in);
  auto grad_tables = at::zeros_like(tables);
  scatter(points.data_ptr<float>(), nullptr, grad_out.data_ptr<float>(), grad_tables.data_ptr<float>(), in.N, in.F,
          in.levels);
  return grad_tables;
}

// Vector-Jacobian product with the points: sum over (l, f) of grad_out[n, l F + f] *
// d(encoding[n, l F + f]) / d(points[n]) -> [N, 3]. Levels in order per point (deterministic).
at::Tensor points_vjp(at::Tensor grad_out, at::Tensor points, at::Tensor tables,
                         std::vector<int64_t> resolutions, std::vector<int64_t> offsets, std::vector<int64_t> hashed) {
  const Inputs in = check_inputs(points, tables, resolutions, offsets, hashed);
  check_per_point(grad_out, "grad_out", in.L * in.F, in);
  auto grad_points = at::zeros({in.N, 3}, points.options());
  const float* x = points.data_ptr<float>();
  const float* table = tables.data_ptr<float>();
  const float* g = grad_out.data_ptr<float>();
  float* gp = grad_points.data_ptr<float>();
  const int64_t N = in.N, L = in.L;
  dispatch_features(in.F, [&](auto fc) {
    constexpr int kF = decltype(fc)::value;
    const int64_t nf = kF ? kF : in.F;
#pragma omp parallel
    {
      BlockCorners block;
      for (int64_t l = 0; l < L; ++l) {
        const Level lv = in.levels[l];
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
  return grad_points;
}

// Backward of points_vjp for an upstream gradient v [N, 3]: returns (d/d grad_out [N, L * F],
// d/d tables [P, F]); either is an undefined tensor when not requested.
std::vector<at::Tensor> points_vjp_backward(at::Tensor v, at::Tensor grad_out, at::Tensor points,
                                               at::Tensor tables, std::vector<int64_t> resolutions,
                                               std::vector<int64_t> offsets, std::vector<int64_t> hashed,
                                               bool need_grad_out, bool need_tables) {
  const Inputs in = check_inputs(points, tables, resolutions, offsets, hashed);
  check_per_point(v, "v", 3, in);
  check_per_point(grad_out, "grad_out", in.L * in.F, in);
  at::Tensor gg, gt;
  if (need_grad_out) {
    gg = at::empty({in.N, in.L * in.F}, points.options());
    gather(points.data_ptr<float>(), v.data_ptr<float>(), tables.data_ptr<float>(), gg.data_ptr<float>(), in.N, in.F,
           in.levels);
  }
  if (need_tables) {
    gt = at::zeros_like(tables);
    scatter(points.data_ptr<float>(), v.data_ptr<float>(), grad_out.data_ptr<float>(), gt.data_ptr<float>(), in.N,
            in.F, in.levels);
  }
  return {gg, gt};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward);
  m.def("backward_tables", &backward_tables);
  m.def("points_vjp", &points_vjp);
  m.def("points_vjp_backward", &points_vjp_backward);
}
