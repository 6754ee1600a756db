// CUDA twin of hash_grid.cpp (multiresolution hash encoding): the same four operations on CUDA
// tensors, one thread per (point, level), with the per-element math from hash_grid_math.h.
// Scatters into the tables use atomicAdd, so unlike the CPU kernel their float sums are not
// bit-reproducible run to run.
//
// Status: compiles with nvcc (tests/test_hash_grid.py); it has never run, as no machine here has a
// GPU. The Python side (cuda/hash_grid.py) only uses it for backend="cuda", never for "auto".
// Every op takes the CUDA stream (torch.cuda.current_stream().cuda_stream) as its first argument.
// Defining SDS3D_HASH_GRID_KERNELS_ONLY compiles the kernels and their raw-pointer launchers
// without the PyTorch bindings (seconds instead of minutes with nvcc).
#include <cuda_runtime.h>

#include <cstdint>

#include "hash_grid_math.h"

namespace sds3d {
namespace hashgrid {

constexpr int kMaxLevels = 32;
constexpr int kMaxFeatures = 32;

// Level metadata, passed to the kernels by value.
struct Layout {
  int32_t resolution[kMaxLevels];
  int64_t offset[kMaxLevels];
  uint32_t size[kMaxLevels];
  bool hashed[kMaxLevels];
  int levels;
  int features;
};

namespace {

constexpr int kThreads = 256;

// Corner rows (into the packed table) and weights of point n in level l.
__device__ inline Cell corners(const float* x, int64_t n, const Layout& layout, int l, int64_t rows[8],
                               float weights[8]) {
  const Cell cell = locate(x + 3 * n, layout.resolution[l]);
  uint32_t level_rows[8];
  cell_corners(cell, layout.resolution[l], layout.size[l], layout.hashed[l], level_rows, weights);
  for (int k = 0; k < 8; ++k) rows[k] = layout.offset[l] + level_rows[k];
  return cell;
}

__global__ void forward_kernel(const float* __restrict__ x, const float* __restrict__ table, float* __restrict__ out,
                               int64_t N, Layout layout) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= N * layout.levels) return;
  const int64_t n = i / layout.levels;
  const int l = static_cast<int>(i % layout.levels), F = layout.features;
  int64_t rows[8];
  float weights[8];
  corners(x, n, layout, l, rows, weights);
  float acc[kMaxFeatures];
  for (int f = 0; f < F; ++f) acc[f] = 0.f;
  for (int k = 0; k < 8; ++k)
    for (int f = 0; f < F; ++f) acc[f] += weights[k] * table[rows[k] * F + f];
  for (int f = 0; f < F; ++f) out[i * F + f] = acc[f];
}

__global__ void backward_tables_kernel(const float* __restrict__ g, const float* __restrict__ x,
                                       float* __restrict__ grad_tables, int64_t N, Layout layout) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= N * layout.levels) return;
  const int64_t n = i / layout.levels;
  const int l = static_cast<int>(i % layout.levels), F = layout.features;
  int64_t rows[8];
  float weights[8];
  corners(x, n, layout, l, rows, weights);
  for (int k = 0; k < 8; ++k)
    for (int f = 0; f < F; ++f) atomicAdd(grad_tables + rows[k] * F + f, weights[k] * g[i * F + f]);
}

__global__ void points_vjp_kernel(const float* __restrict__ g, const float* __restrict__ x,
                                  const float* __restrict__ table, float* __restrict__ grad_points, int64_t N,
                                  Layout layout) {
  const int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  const int F = layout.features;
  float acc[3] = {0.f, 0.f, 0.f};
  for (int l = 0; l < layout.levels; ++l) {
    const float* gn = g + (n * layout.levels + l) * F;
    int64_t rows[8];
    float weights[8], grads[8][3];
    cell_weight_gradients(corners(x, n, layout, l, rows, weights), layout.resolution[l], grads);
    for (int k = 0; k < 8; ++k) {
      float s = 0.f;
      for (int f = 0; f < F; ++f) s += gn[f] * table[rows[k] * F + f];
      for (int d = 0; d < 3; ++d) acc[d] += s * grads[k][d];
    }
  }
  for (int d = 0; d < 3; ++d) grad_points[3 * n + d] = acc[d];
}

// Backward of points_vjp: d/d(grad_out) and/or d/d(tables) for an upstream gradient v [N, 3].
__global__ void points_vjp_backward_kernel(const float* __restrict__ v, const float* __restrict__ g,
                                           const float* __restrict__ x, const float* __restrict__ table,
                                           float* __restrict__ grad_g, float* __restrict__ grad_tables,
                                           int64_t N, Layout layout) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= N * layout.levels) return;
  const int64_t n = i / layout.levels;
  const int l = static_cast<int>(i % layout.levels), F = layout.features;
  int64_t rows[8];
  float weights[8], grads[8][3];
  cell_weight_gradients(corners(x, n, layout, l, rows, weights), layout.resolution[l], grads);
  const float* vn = v + 3 * n;
  float acc[kMaxFeatures];
  for (int f = 0; f < F; ++f) acc[f] = 0.f;
  for (int k = 0; k < 8; ++k) {
    const float u = vn[0] * grads[k][0] + vn[1] * grads[k][1] + vn[2] * grads[k][2];
    for (int f = 0; f < F; ++f) {
      if (grad_g) acc[f] += u * table[rows[k] * F + f];
      if (grad_tables) atomicAdd(grad_tables + rows[k] * F + f, u * g[i * F + f]);
    }
  }
  if (grad_g)
    for (int f = 0; f < F; ++f) grad_g[i * F + f] = acc[f];
}

unsigned blocks_for(int64_t count) { return static_cast<unsigned>((count + kThreads - 1) / kThreads); }

}  // namespace

// Host launchers (raw device pointers, N points).
void launch_forward(const float* x, const float* table, float* out, int64_t N, const Layout& layout,
                    cudaStream_t stream) {
  const int64_t count = N * layout.levels;
  if (count > 0) forward_kernel<<<blocks_for(count), kThreads, 0, stream>>>(x, table, out, N, layout);
}

void launch_backward_tables(const float* g, const float* x, float* grad_tables, int64_t N, const Layout& layout,
                            cudaStream_t stream) {
  const int64_t count = N * layout.levels;
  if (count > 0) backward_tables_kernel<<<blocks_for(count), kThreads, 0, stream>>>(g, x, grad_tables, N, layout);
}

void launch_points_vjp(const float* g, const float* x, const float* table, float* grad_points, int64_t N,
                       const Layout& layout, cudaStream_t stream) {
  if (N > 0) points_vjp_kernel<<<blocks_for(N), kThreads, 0, stream>>>(g, x, table, grad_points, N, layout);
}

void launch_points_vjp_backward(const float* v, const float* g, const float* x, const float* table, float* grad_g,
                                float* grad_tables, int64_t N, const Layout& layout, cudaStream_t stream) {
  const int64_t count = N * layout.levels;
  if (count > 0 && (grad_g || grad_tables))
    points_vjp_backward_kernel<<<blocks_for(count), kThreads, 0, stream>>>(v, g, x, table, grad_g, grad_tables, N,
                                                                           layout);
}

}  // namespace hashgrid
}  // namespace sds3d

#ifndef SDS3D_HASH_GRID_KERNELS_ONLY
#include <torch/extension.h>

#include <vector>

using namespace sds3d::hashgrid;

namespace {

Layout read_layout(const torch::Tensor& tables, const std::vector<int64_t>& resolutions,
                   const std::vector<int64_t>& offsets, const std::vector<int64_t>& hashed) {
  const int64_t L = resolutions.size();
  TORCH_CHECK(L >= 1 && L <= kMaxLevels && offsets.size() == size_t(L + 1) && hashed.size() == size_t(L),
              "hash grid layout: 1 to 32 levels, L + 1 offsets, L flags");
  TORCH_CHECK(tables.size(1) >= 1 && tables.size(1) <= kMaxFeatures, "hash grid: 1 to 32 features per level");
  TORCH_CHECK(offsets[0] == 0 && offsets[L] == tables.size(0), "hash grid layout: offsets must span the table rows");
  Layout layout;
  layout.levels = static_cast<int>(L);
  layout.features = static_cast<int>(tables.size(1));
  for (int64_t l = 0; l < L; ++l) {
    const int64_t size = offsets[l + 1] - offsets[l], side = resolutions[l] + 1;
    TORCH_CHECK(hashed[l] ? (size > 0 && (size & (size - 1)) == 0 && size <= (int64_t(1) << 31))
                          : size == side * side * side, "hash grid layout: bad table size for level ", l);
    layout.resolution[l] = static_cast<int32_t>(resolutions[l]);
    layout.offset[l] = offsets[l];
    layout.size[l] = static_cast<uint32_t>(size);
    layout.hashed[l] = hashed[l] != 0;
  }
  return layout;
}

void check_cuda(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.scalar_type() == torch::kFloat32 && t.is_contiguous() && t.dim() == 2, name,
              " must be a contiguous 2D float32 CUDA tensor");
}

cudaStream_t as_stream(int64_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

torch::Tensor forward(int64_t stream, torch::Tensor points, torch::Tensor tables, std::vector<int64_t> resolutions,
                      std::vector<int64_t> offsets, std::vector<int64_t> hashed) {
  check_cuda(points, "points");
  check_cuda(tables, "tables");
  const Layout layout = read_layout(tables, resolutions, offsets, hashed);
  const int64_t N = points.size(0);
  auto out = torch::empty({N, int64_t(layout.levels) * layout.features}, points.options());
  launch_forward(points.data_ptr<float>(), tables.data_ptr<float>(), out.data_ptr<float>(), N, layout,
                 as_stream(stream));
  return out;
}

torch::Tensor backward_tables(int64_t stream, torch::Tensor grad_out, torch::Tensor points, torch::Tensor tables,
                              std::vector<int64_t> resolutions, std::vector<int64_t> offsets,
                              std::vector<int64_t> hashed) {
  check_cuda(grad_out, "grad_out");
  check_cuda(points, "points");
  const Layout layout = read_layout(tables, resolutions, offsets, hashed);
  auto grad_tables = torch::zeros_like(tables);
  launch_backward_tables(grad_out.data_ptr<float>(), points.data_ptr<float>(), grad_tables.data_ptr<float>(),
                         points.size(0), layout, as_stream(stream));
  return grad_tables;
}

torch::Tensor points_vjp(int64_t stream, torch::Tensor grad_out, torch::Tensor points, torch::Tensor tables,
                         std::vector<int64_t> resolutions, std::vector<int64_t> offsets, std::vector<int64_t> hashed) {
  check_cuda(grad_out, "grad_out");
  check_cuda(points, "points");
  check_cuda(tables, "tables");
  const Layout layout = read_layout(tables, resolutions, offsets, hashed);
  auto grad_points = torch::empty({points.size(0), 3}, points.options());
  launch_points_vjp(grad_out.data_ptr<float>(), points.data_ptr<float>(), tables.data_ptr<float>(),
                    grad_points.data_ptr<float>(), points.size(0), layout, as_stream(stream));
  return grad_points;
}

std::vector<torch::Tensor> points_vjp_backward(int64_t stream, torch::Tensor v, torch::Tensor grad_out,
                                               torch::Tensor points, torch::Tensor tables,
                                               std::vector<int64_t> resolutions, std::vector<int64_t> offsets,
                                               std::vector<int64_t> hashed, bool need_grad_out, bool need_tables) {
  check_cuda(v, "v");
  check_cuda(grad_out, "grad_out");
  check_cuda(points, "points");
  check_cuda(tables, "tables");
  const Layout layout = read_layout(tables, resolutions, offsets, hashed);
  torch::Tensor gg = need_grad_out ? torch::empty_like(grad_out) : torch::Tensor();
  torch::Tensor gt = need_tables ? torch::zeros_like(tables) : torch::Tensor();
  launch_points_vjp_backward(v.data_ptr<float>(), grad_out.data_ptr<float>(), points.data_ptr<float>(),
                             tables.data_ptr<float>(), need_grad_out ? gg.data_ptr<float>() : nullptr,
                             need_tables ? gt.data_ptr<float>() : nullptr, points.size(0), layout, as_stream(stream));
  return {gg, gt};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward);
  m.def("backward_tables", &backward_tables);
  m.def("points_vjp", &points_vjp);
  m.def("points_vjp_backward", &points_vjp_backward);
}
#endif  // SDS3D_HASH_GRID_KERNELS_ONLY
