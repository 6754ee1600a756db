// Tile-based 3D Gaussian splatting on the CPU (C++ / OpenMP): EWA projection, per-tile
// depth-sorted lists, front-to-back compositing with early termination, and the backward pass in
// reverse order as in 3DGS. Conventions follow gsplat.rasterization: world->camera `viewmats`
// (OpenCV), pixel intrinsics `Ks`, activated scales and opacities, quaternions (w, x, y, z),
// pixel centres at (x + 0.5, y + 0.5). The PyTorch twin is cuda/_torch_gaussians.py.
//
// A plain C ABI over raw pointers (no torch headers, so it builds in about a second): the caller
// (cuda/gaussian_rasterizer.py) checks shapes and dtypes, allocates every output, zero-filled
// where the comments say so, and passes contiguous float32 / int32 / int64 buffers.
#include "openmp.h"

#include <cmath>
#include <cstdint>

#include <algorithm>
#include <numeric>
#include <vector>

#include "gaussian_math.h"

using namespace sds3d;

namespace {

struct Camera {
  Mat3 W; Vec3 t; float fx, fy, cx, cy;
};

Camera read_camera(const float* viewmat, const float* K) {
  Camera cam;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) cam.W.m[i][j] = viewmat[i * 4 + j];
  cam.t = {viewmat[3], viewmat[7], viewmat[11]};
  cam.fx = K[0]; cam.fy = K[4]; cam.cx = K[2]; cam.cy = K[5];
  return cam;
}

Vec3 to_camera(const Camera& cam, const float* mean) {
  const auto& W = cam.W.m;
  return {W[0][0] * mean[0] + W[0][1] * mean[1] + W[0][2] * mean[2] + cam.t.x,
          W[1][0] * mean[0] + W[1][1] * mean[1] + W[1][2] * mean[2] + cam.t.y,
          W[2][0] * mean[0] + W[2][1] * mean[1] + W[2][2] * mean[2] + cam.t.z};
}

// World covariance factor M = R(q) diag(s), with q normalised; returns the unit quaternion too.
Mat3 covariance_factor(const float* quat, const float* scale, float qn[4], float* qnorm) {
  const float norm = sqrtf(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]);
  for (int i = 0; i < 4; ++i) qn[i] = quat[i] / norm;
  *qnorm = norm;
  Mat3 M = quat_to_rotmat(qn[0], qn[1], qn[2], qn[3]);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) M.m[i][j] *= scale[j];
  return M;
}

// Camera-space covariance W (M M^T) W^T.
Mat3 camera_covariance(const Camera& cam, const Mat3& M) {
  const Mat3 WM = matmul(cam.W, M);
  return matmul(WM, transpose(WM));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Projection
// ---------------------------------------------------------------------------------------------

// means [N, 3], quats [N, 4], scales [N, 3], opacities [N], viewmats [C, 4, 4], Ks [C, 3, 3] ->
// means2d [C, N, 2], conics [C, N, 3], depths [C, N], radii [C, N, 2] (all zero-filled by the caller).
extern "C" void sds3d_project_forward(const float* pm, const float* pq, const float* ps, const float* po,
                                      const float* pv, const float* pk, int64_t N, int64_t C, int64_t width,
                                      int64_t height, double near_plane, double far_plane, double eps2d,
                                      float* out_m, float* out_c, float* out_d, int32_t* out_r) {

#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    float qn[4], qnorm;
    const Mat3 M = covariance_factor(pq + 4 * n, ps + 3 * n, qn, &qnorm);
    const float extent_sigma = alpha_extent_sigma(po[n]);
    for (int64_t c = 0; c < C; ++c) {
      const Camera cam = read_camera(pv + 16 * c, pk + 9 * c);
      const Vec3 p = to_camera(cam, pm + 3 * n);
      const int64_t i = c * N + n;
      out_d[i] = p.z;
      if (p.z < near_plane || p.z > far_plane || extent_sigma <= 0.f) continue;
      const Mat3 S = camera_covariance(cam, M);
      const Jacobian J = perspective_jacobian(p, cam.fx, cam.fy, cam.cx, cam.cy, width, height);
      // cov2d = J S J^T with J = [[j00, 0, j02], [0, j11, j12]]
      const float t00 = J.j00 * S.m[0][0] + J.j02 * S.m[2][0], t01 = J.j00 * S.m[0][1] + J.j02 * S.m[2][1],
                  t02 = J.j00 * S.m[0][2] + J.j02 * S.m[2][2];
      const float t11 = J.j11 * S.m[1][1] + J.j12 * S.m[2][1], t12 = J.j11 * S.m[1][2] + J.j12 * S.m[2][2];
      const float a = t00 * J.j00 + t02 * J.j02 + eps2d;
      const float b = t01 * J.j11 + t02 * J.j12;
      const float cc = t11 * J.j11 + t12 * J.j12 + eps2d;
      const float det = a * cc - b * b;
      if (!(det > 0.f)) continue;
      const float mx = cam.fx * p.x / p.z + cam.cx, my = cam.fy * p.y / p.z + cam.cy;
      const float ex = extent_sigma * sqrtf(a), ey = extent_sigma * sqrtf(cc);
      if (mx + ex <= 0.f || mx - ex >= width || my + ey <= 0.f || my - ey >= height) continue;
      out_m[2 * i] = mx; out_m[2 * i + 1] = my;
      out_c[3 * i] = cc / det; out_c[3 * i + 1] = -b / det; out_c[3 * i + 2] = a / det;
      out_r[2 * i] = (int32_t)ceilf(ex); out_r[2 * i + 1] = (int32_t)ceilf(ey);
    }
  }
}

// Gradients of project_forward: v_means2d [C, N, 2], v_conics [C, N, 3], v_depths [C, N] ->
// v_means [N, 3], v_quats [N, 4], v_scales [N, 3] (zero-filled by the caller).
extern "C" void sds3d_project_backward(const float* pm, const float* pq, const float* ps, const float* pv,
                                       const float* pk, int64_t N, int64_t C, int64_t width, int64_t height,
                                       const float* pc, const int32_t* pr, const float* gm, const float* gc,
                                       const float* gd, float* om, float* oq, float* os) {

#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    float qn[4], qnorm;
    const Mat3 M = covariance_factor(pq + 4 * n, ps + 3 * n, qn, &qnorm);
    Mat3 v_M{};  // accumulated over cameras
    float v_mean[3] = {0.f, 0.f, 0.f};
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = c * N + n;
      const Camera cam = read_camera(pv + 16 * c, pk + 9 * c);
      const Vec3 p = to_camera(cam, pm + 3 * n);
      float v_p[3] = {0.f, 0.f, gd[i]};  // depth = p.z always carries its gradient
      if (pr[2 * i] > 0 && pr[2 * i + 1] > 0) {
        const Mat3 S = camera_covariance(cam, M);
        const Jacobian J = perspective_jacobian(p, cam.fx, cam.fy, cam.cx, cam.cy, width, height);
        // conic Q = cov^-1: dL/dcov = -Q G Q with G the symmetric gradient matrix of Q.
        const float qa = pc[3 * i], qb = pc[3 * i + 1], qc = pc[3 * i + 2];
        const float ga = gc[3 * i], gb = 0.5f * gc[3 * i + 1], gcc = gc[3 * i + 2];
        const float ha = qa * ga + qb * gb, hb = qa * gb + qb * gcc;  // row 0 of Q G
        const float hc = qb * ga + qc * gb, hd = qb * gb + qc * gcc;  // row 1 of Q G
        const float va = -(ha * qa + hb * qb), vb = -(ha * qb + hb * qc), vd = -(hc * qb + hd * qc);
        const float Jm[2][3] = {{J.j00, 0.f, J.j02}, {0.f, J.j11, J.j12}};
        const float V[2][2] = {{va, vb}, {vb, vd}};
        // v_S = J^T V J ; v_J = 2 V J S
        Mat3 v_S;
        for (int r = 0; r < 3; ++r)
          for (int s = 0; s < 3; ++s) {
            float acc = 0.f;
            for (int k = 0; k < 2; ++k)
              for (int l = 0; l < 2; ++l) acc += Jm[k][r] * V[k][l] * Jm[l][s];
            v_S.m[r][s] = acc;
          }
        float VJ[2][3], v_J[2][3];
        for (int k = 0; k < 2; ++k)
          for (int s = 0; s < 3; ++s) VJ[k][s] = V[k][0] * Jm[0][s] + V[k][1] * Jm[1][s];
        for (int k = 0; k < 2; ++k)
          for (int s = 0; s < 3; ++s)
            v_J[k][s] = 2.f * (VJ[k][0] * S.m[0][s] + VJ[k][1] * S.m[1][s] + VJ[k][2] * S.m[2][s]);
        // world covariance Sigma = M M^T, camera S = W Sigma W^T -> v_Sigma = W^T v_S W, v_M = 2 v_Sigma M
        const Mat3 v_Sigma = matmul(matmul(transpose(cam.W), v_S), cam.W);
        const Mat3 v_M_c = matmul(v_Sigma, M);
        for (int r = 0; r < 3; ++r)
          for (int s = 0; s < 3; ++s) v_M.m[r][s] += 2.f * v_M_c.m[r][s];
        // mean2d = (fx x / z + cx, fy y / z + cy)
        const float rz = 1.f / p.z, rz2 = rz * rz, rz3 = rz2 * rz;
        const float gu = gm[2 * i], gv = gm[2 * i + 1];
        v_p[0] += gu * cam.fx * rz;
        v_p[1] += gv * cam.fy * rz;
        v_p[2] += -(gu * cam.fx * p.x + gv * cam.fy * p.y) * rz2;
        // Jacobian entries as functions of p (clamped coordinates depend on z only)
        v_p[2] += -v_J[0][0] * cam.fx * rz2 - v_J[1][1] * cam.fy * rz2;
        if (J.clamp_x) {
          v_p[2] += v_J[0][2] * cam.fx * J.lim_x * rz2;
        } else {
          v_p[0] += -v_J[0][2] * cam.fx * rz2;
          v_p[2] += v_J[0][2] * 2.f * cam.fx * p.x * rz3;
        }
        if (J.clamp_y) {
          v_p[2] += v_J[1][2] * cam.fy * J.lim_y * rz2;
        } else {
          v_p[1] += -v_J[1][2] * cam.fy * rz2;
          v_p[2] += v_J[1][2] * 2.f * cam.fy * p.y * rz3;
        }
      }
      for (int r = 0; r < 3; ++r)
        v_mean[r] += cam.W.m[0][r] * v_p[0] + cam.W.m[1][r] * v_p[1] + cam.W.m[2][r] * v_p[2];
    }
    for (int r = 0; r < 3; ++r) om[3 * n + r] = v_mean[r];
    // M = R diag(s)
    const Mat3 R = quat_to_rotmat(qn[0], qn[1], qn[2], qn[3]);
    const float* s = ps + 3 * n;
    Mat3 v_R;
    for (int j = 0; j < 3; ++j) {
      float acc = 0.f;
      for (int r = 0; r < 3; ++r) {
        v_R.m[r][j] = v_M.m[r][j] * s[j];
        acc += R.m[r][j] * v_M.m[r][j];
      }
      os[3 * n + j] = acc;
    }
    float v_qn[4];
    quat_to_rotmat_backward(qn[0], qn[1], qn[2], qn[3], v_R, v_qn);
    const float dot = qn[0] * v_qn[0] + qn[1] * v_qn[1] + qn[2] * v_qn[2] + qn[3] * v_qn[3];
    for (int k = 0; k < 4; ++k) oq[4 * n + k] = (v_qn[k] - qn[k] * dot) / qnorm;
  }
}

// ---------------------------------------------------------------------------------------------
// Tile binning and compositing
// ---------------------------------------------------------------------------------------------

// Per camera: Gaussians sorted by depth (ties by index), appended to every tile their box touches.
// means2d [C, N, 2], radii [C, N, 2], depths [C, N] -> tile_offsets [C, T + 1] (into the flat list; its
// last entry is the list's length) and a handle on the lists, which sds3d_take_tile_lists copies into
// the caller's flat_ids [length] and frees.
extern "C" void* sds3d_bin_tiles(const float* pm, const int32_t* pr, const float* pd, int64_t C, int64_t N,
                                 int64_t width, int64_t height, int64_t tile_size, int64_t* pto) {
  const int64_t tiles_x = (width + tile_size - 1) / tile_size, tiles_y = (height + tile_size - 1) / tile_size;
  const int64_t T = tiles_x * tiles_y;
  auto* lists = new std::vector<std::vector<int32_t>>(C);
  std::vector<std::vector<int64_t>> offsets(C, std::vector<int64_t>(T + 1, 0));

#pragma omp parallel for schedule(dynamic)
  for (int64_t c = 0; c < C; ++c) {
    std::vector<int32_t> order;
    order.reserve(N);
    for (int64_t n = 0; n < N; ++n)
      if (pr[2 * (c * N + n)] > 0) order.push_back((int32_t)n);
    const float* depth = pd + c * N;
    std::stable_sort(order.begin(), order.end(), [depth](int32_t a, int32_t b) { return depth[a] < depth[b]; });
    auto rect = [&](int32_t n, int64_t* x0, int64_t* x1, int64_t* y0, int64_t* y1) {
      const int64_t i = c * N + n;
      const float mx = pm[2 * i], my = pm[2 * i + 1];
      const float rx = (float)pr[2 * i], ry = (float)pr[2 * i + 1];
      *x0 = std::max<int64_t>(0, (int64_t)floorf((mx - rx) / tile_size));
      *x1 = std::min<int64_t>(tiles_x - 1, (int64_t)floorf((mx + rx) / tile_size));
      *y0 = std::max<int64_t>(0, (int64_t)floorf((my - ry) / tile_size));
      *y1 = std::min<int64_t>(tiles_y - 1, (int64_t)floorf((my + ry) / tile_size));
    };
    std::vector<int64_t>& off = offsets[c];
    for (int32_t n : order) {
      int64_t x0, x1, y0, y1;
      rect(n, &x0, &x1, &y0, &y1);
      for (int64_t ty = y0; ty <= y1; ++ty)
        for (int64_t tx = x0; tx <= x1; ++tx) off[ty * tiles_x + tx + 1] += 1;
    }
    for (int64_t t = 0; t < T; ++t) off[t + 1] += off[t];
    std::vector<int64_t> cursor(off.begin(), off.end() - 1);
    (*lists)[c].resize(off[T]);
    for (int32_t n : order) {
      int64_t x0, x1, y0, y1;
      rect(n, &x0, &x1, &y0, &y1);
      for (int64_t ty = y0; ty <= y1; ++ty)
        for (int64_t tx = x0; tx <= x1; ++tx) (*lists)[c][cursor[ty * tiles_x + tx]++] = n;
    }
  }
  int64_t total = 0;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t t = 0; t <= T; ++t) pto[c * (T + 1) + t] = total + offsets[c][t];
    total += offsets[c][T];
  }
  return lists;
}

extern "C" void sds3d_take_tile_lists(void* handle, int32_t* pf) {
  auto* lists = static_cast<std::vector<std::vector<int32_t>>*>(handle);
  for (const auto& list : *lists) pf = std::copy(list.begin(), list.end(), pf);
  delete lists;
}

// Pixel range [lo, hi] (inclusive, clamped to the tile) whose centres lie within `radius` of `mean`.
inline void pixel_span(float mean, int32_t radius, int64_t tile_lo, int64_t tile_hi, int64_t* lo, int64_t* hi) {
  *lo = std::max<int64_t>(tile_lo, (int64_t)floorf(mean - radius - 0.5f));
  *hi = std::min<int64_t>(tile_hi, (int64_t)floorf(mean + radius - 0.5f) + 1);
}

// Tiles are composited Gaussian by Gaussian (front to back), each touching only the pixels of its
// box: per pixel this visits the same depth-ordered Gaussians as a per-pixel loop would (pixels
// outside a box see alpha < kAlphaMin), at a fraction of the cost. Opacities are per camera
// [C, N] (the antialiased mode scales them view by view).
// means2d [C, N, 2], conics [C, N, 3], colors [C, N, D], opacities [C, N], radii [C, N, 2] and the tile
// lists -> render [C, H, W, D], alphas [C, H, W, 1], last_ids [C, H, W] (end of the contributors in the
// flat list, for the backward pass), all zero-filled by the caller.
extern "C" void sds3d_rasterize_forward(const float* pm, const float* pc, const float* pcol, const float* po,
                                        const int32_t* pr, const int64_t* pto, const int32_t* pf, int64_t C,
                                        int64_t N, int64_t D, int64_t width, int64_t height, int64_t tile_size,
                                        float* out, float* out_a, int64_t* out_last) {
  const int64_t tiles_x = (width + tile_size - 1) / tile_size, tiles_y = (height + tile_size - 1) / tile_size;
  const int64_t T = tiles_x * tiles_y;

#pragma omp parallel
  {
    std::vector<float> trans, acc;
    std::vector<int64_t> last;
    std::vector<char> done;
#pragma omp for schedule(dynamic)
    for (int64_t ct = 0; ct < C * T; ++ct) {
      const int64_t c = ct / T, tile = ct % T;
      const int64_t start = pto[c * (T + 1) + tile], end = pto[c * (T + 1) + tile + 1];
      const int64_t x0 = (tile % tiles_x) * tile_size, y0 = (tile / tiles_x) * tile_size;
      const int64_t x1 = std::min(x0 + tile_size, width) - 1, y1 = std::min(y0 + tile_size, height) - 1;
      const int64_t tw = x1 - x0 + 1, P = tw * (y1 - y0 + 1);
      trans.assign(P, 1.f);
      acc.assign(P * D, 0.f);
      last.assign(P, start);
      done.assign(P, 0);
      int64_t active = P;
      for (int64_t k = start; k < end && active > 0; ++k) {
        const int64_t g = pf[k], i = c * N + g;
        const float mx = pm[2 * i], my = pm[2 * i + 1], opacity = po[i];
        const float sigma_cut = sigma_cutoff(opacity);
        const float* q = pc + 3 * i;
        const float* col = pcol + i * D;
        int64_t xa, xb, ya, yb;
        pixel_span(mx, pr[2 * i], x0, x1, &xa, &xb);
        pixel_span(my, pr[2 * i + 1], y0, y1, &ya, &yb);
        for (int64_t y = ya; y <= yb; ++y) {
          for (int64_t x = xa; x <= xb; ++x) {
            const int64_t p = (y - y0) * tw + (x - x0);
            if (done[p]) continue;
            const float sigma = gaussian_sigma(q, mx - (x + 0.5f), my - (y + 0.5f));
            if (sigma < 0.f || sigma > sigma_cut) continue;
            const float alpha = std::min(kAlphaMax, opacity * expf(-sigma));
            if (alpha < kAlphaMin) continue;
            const float next = trans[p] * (1.f - alpha);
            if (next <= kTransmittanceMin) {
              done[p] = 1;
              --active;
              continue;
            }
            const float w = alpha * trans[p];
            float* a = acc.data() + p * D;
            for (int64_t d = 0; d < D; ++d) a[d] += w * col[d];
            trans[p] = next;
            last[p] = k + 1;
          }
        }
      }
      for (int64_t y = y0; y <= y1; ++y)
        for (int64_t x = x0; x <= x1; ++x) {
          const int64_t p = (y - y0) * tw + (x - x0), pix = (c * height + y) * width + x;
          std::copy(acc.begin() + p * D, acc.begin() + (p + 1) * D, out + pix * D);
          out_a[pix] = 1.f - trans[p];
          out_last[pix] = last[p];
        }
    }
  }
}

// Gradients w.r.t. means2d [C, N, 2], conics [C, N, 3], colors [C, N, D] and opacities [C, N]:
// Gaussians are revisited back to front, each pixel recovering its transmittance by division.
// The threads rasterize_backward may use (rows of its buffers).
extern "C" int64_t sds3d_max_threads() { return omp_get_max_threads(); }

// Gradients w.r.t. means2d [C, N, 2], conics [C, N, 3], colors [C, N, D] and opacities [C, N], per
// thread: buffers [threads, C, N, 6 + D] (zero-filled by the caller, threads >= sds3d_max_threads(),
// summed over threads by the caller) hold (mean2d 2, conic 3, opacity 1, colour D) per (camera, Gaussian).
extern "C" void sds3d_rasterize_backward(const float* pm, const float* pc, const float* pcol, const float* po,
                                         const int32_t* pr, const int64_t* pto, const int32_t* pf, const float* pa,
                                         const int64_t* plast, const float* gr, const float* ga, int64_t C,
                                         int64_t N, int64_t D, int64_t width, int64_t height, int64_t tile_size,
                                         float* pbuf) {
  const int64_t tiles_x = (width + tile_size - 1) / tile_size, tiles_y = (height + tile_size - 1) / tile_size;
  const int64_t T = tiles_x * tiles_y;
  const int64_t stride = 6 + D;  // per (camera, Gaussian): mean2d(2), conic(3), opacity(1), colour(D)

#pragma omp parallel
  {
    float* buf = pbuf + (int64_t)omp_get_thread_num() * C * N * stride;
    std::vector<float> trans, final_trans, behind, grad_local(stride);
// static round-robin: the same tiles land in the same per-thread buffer every run, so the
    // gradient sums are bit-for-bit reproducible (resumed runs equal uninterrupted ones).
#pragma omp for schedule(static, 1)
    for (int64_t ct = 0; ct < C * T; ++ct) {
      const int64_t c = ct / T, tile = ct % T;
      const int64_t start = pto[c * (T + 1) + tile];
      const int64_t x0 = (tile % tiles_x) * tile_size, y0 = (tile / tiles_x) * tile_size;
      const int64_t x1 = std::min(x0 + tile_size, width) - 1, y1 = std::min(y0 + tile_size, height) - 1;
      const int64_t tw = x1 - x0 + 1, P = tw * (y1 - y0 + 1);
      trans.resize(P);
      final_trans.resize(P);
      behind.assign(P * D, 0.f);
      int64_t end = start;
      for (int64_t y = y0; y <= y1; ++y)
        for (int64_t x = x0; x <= x1; ++x) {
          const int64_t p = (y - y0) * tw + (x - x0), pix = (c * height + y) * width + x;
          final_trans[p] = trans[p] = 1.f - pa[pix];
          end = std::max(end, plast[pix]);
        }
      for (int64_t k = end - 1; k >= start; --k) {
        const int64_t g = pf[k], i = c * N + g;
        const float mx = pm[2 * i], my = pm[2 * i + 1], opacity = po[i];
        const float sigma_cut = sigma_cutoff(opacity);
        const float* q = pc + 3 * i;
        const float* col = pcol + i * D;
        int64_t xa, xb, ya, yb;
        pixel_span(mx, pr[2 * i], x0, x1, &xa, &xb);
        pixel_span(my, pr[2 * i + 1], y0, y1, &ya, &yb);
        std::fill(grad_local.begin(), grad_local.end(), 0.f);
        bool touched = false;
        for (int64_t y = ya; y <= yb; ++y) {
          for (int64_t x = xa; x <= xb; ++x) {
            const int64_t p = (y - y0) * tw + (x - x0), pix = (c * height + y) * width + x;
            if (k >= plast[pix]) continue;
            const float dx = mx - (x + 0.5f), dy = my - (y + 0.5f);
            const float sigma = gaussian_sigma(q, dx, dy);
            if (sigma < 0.f || sigma > sigma_cut) continue;
            const float vis = expf(-sigma);
            const float raw = opacity * vis;
            const float alpha = std::min(kAlphaMax, raw);
            if (alpha < kAlphaMin) continue;
            touched = true;
            const float ra = 1.f / (1.f - alpha);
            trans[p] *= ra;  // transmittance in front of this Gaussian
            const float w = alpha * trans[p];
            const float* v_col = gr + pix * D;
            float* b = behind.data() + p * D;
            float v_alpha = ga[pix] * final_trans[p] * ra;
            for (int64_t d = 0; d < D; ++d) {
              grad_local[6 + d] += w * v_col[d];
              v_alpha += v_col[d] * (trans[p] * col[d] - b[d] * ra);
              b[d] += w * col[d];
            }
            if (raw <= kAlphaMax) {
              grad_local[5] += v_alpha * vis;
              const float v_sigma = -v_alpha * alpha;
              grad_local[0] += v_sigma * (q[0] * dx + q[1] * dy);
              grad_local[1] += v_sigma * (q[1] * dx + q[2] * dy);
              grad_local[2] += v_sigma * 0.5f * dx * dx;
              grad_local[3] += v_sigma * dx * dy;
              grad_local[4] += v_sigma * 0.5f * dy * dy;
            }
          }
        }
        if (touched) {
          float* out = buf + i * stride;
          for (int64_t s = 0; s < stride; ++s) out[s] += grad_local[s];
        }
      }
    }
  }
}
