// Per-Gaussian math for the tile rasterizer: EWA projection, its backward, and the per-pixel
// alpha. Plain inline functions on small fixed-size structs so a CUDA twin can include this file
// (mark with SDS3D_HD) and the CPU tests exercise the same math.
#pragma once
#include <cmath>

#ifdef __CUDACC__
#define SDS3D_HD __host__ __device__ inline
#else
#define SDS3D_HD inline
#endif

namespace sds3d {

constexpr float kAlphaMin = 1.0f / 255.0f;    // a Gaussian below this alpha is skipped
constexpr float kAlphaMax = 0.99f;            // alphas are clamped here (keeps 1 - alpha > 0)
constexpr float kTransmittanceMin = 1e-4f;    // a pixel stops once its transmittance would drop here

struct Vec3 { float x, y, z; };
struct Mat3 { float m[3][3]; };  // row-major

SDS3D_HD Mat3 matmul(const Mat3& a, const Mat3& b) {
  Mat3 r;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      r.m[i][j] = a.m[i][0] * b.m[0][j] + a.m[i][1] * b.m[1][j] + a.m[i][2] * b.m[2][j];
  return r;
}

SDS3D_HD Mat3 transpose(const Mat3& a) {
  Mat3 r;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) r.m[i][j] = a.m[j][i];
  return r;
}

// Rotation matrix of a unit quaternion (w, x, y, z).
SDS3D_HD Mat3 quat_to_rotmat(float w, float x, float y, float z) {
  Mat3 r;
  r.m[0][0] = 1.f - 2.f * (y * y + z * z); r.m[0][1] = 2.f * (x * y - w * z); r.m[0][2] = 2.f * (x * z + w * y);
  r.m[1][0] = 2.f * (x * y + w * z); r.m[1][1] = 1.f - 2.f * (x * x + z * z); r.m[1][2] = 2.f * (y * z - w * x);
  r.m[2][0] = 2.f * (x * z - w * y); r.m[2][1] = 2.f * (y * z + w * x); r.m[2][2] = 1.f - 2.f * (x * x + y * y);
  return r;
}

// d(loss)/d(w,x,y,z) of the unit quaternion, given d(loss)/dR.
SDS3D_HD void quat_to_rotmat_backward(float w, float x, float y, float z, const Mat3& v, float out[4]) {
  const float (*g)[3] = v.m;
  out[0] = 2.f * (x * (g[2][1] - g[1][2]) + y * (g[0][2] - g[2][0]) + z * (g[1][0] - g[0][1]));
  out[1] = 2.f * (y * (g[0][1] + g[1][0]) + z * (g[0][2] + g[2][0]) + w * (g[2][1] - g[1][2])) - 4.f * x * (g[1][1] + g[2][2]);
  out[2] = 2.f * (x * (g[0][1] + g[1][0]) + z * (g[1][2] + g[2][1]) + w * (g[0][2] - g[2][0])) - 4.f * y * (g[0][0] + g[2][2]);
  out[3] = 2.f * (x * (g[0][2] + g[2][0]) + y * (g[1][2] + g[2][1]) + w * (g[1][0] - g[0][1])) - 4.f * z * (g[0][0] + g[1][1]);
}

// Camera-frame quantities of one Gaussian, kept for the backward pass.
struct Projection {
  bool visible;
  float mean2d[2];
  float conic[3];   // inverse 2D covariance (a, b, c) of [[a, b], [b, c]]
  float cov2d[3];   // 2D covariance incl. the eps2d blur
  float depth;      // camera-space z
  float extent[2];  // half-size in pixels of the box outside which alpha < kAlphaMin
};

// Perspective Jacobian rows J = [[fx/z, 0, -fx*xc/z^2], [0, fy/z, -fy*yc/z^2]] where xc, yc are
// x, y clamped to 1.3x the field of view (as 3DGS and gsplat do) so off-screen Gaussians stay sane.
struct Jacobian { float j00, j02, j11, j12; bool clamp_x, clamp_y; float lim_x, lim_y; };

SDS3D_HD Jacobian perspective_jacobian(const Vec3& p, float fx, float fy, float cx, float cy, int width, int height) {
  const float tan_fovx = 0.5f * width / fx, tan_fovy = 0.5f * height / fy;
  const float lim_x_pos = (width - cx) / fx + 0.3f * tan_fovx, lim_x_neg = cx / fx + 0.3f * tan_fovx;
  const float lim_y_pos = (height - cy) / fy + 0.3f * tan_fovy, lim_y_neg = cy / fy + 0.3f * tan_fovy;
  const float rz = 1.f / p.z, rz2 = rz * rz;
  const float u = p.x * rz, v = p.y * rz;
  Jacobian J;
  J.clamp_x = u < -lim_x_neg || u > lim_x_pos;
  J.clamp_y = v < -lim_y_neg || v > lim_y_pos;
  J.lim_x = u < -lim_x_neg ? -lim_x_neg : lim_x_pos;
  J.lim_y = v < -lim_y_neg ? -lim_y_neg : lim_y_pos;
  const float xc = J.clamp_x ? p.z * J.lim_x : p.x;
  const float yc = J.clamp_y ? p.z * J.lim_y : p.y;
  J.j00 = fx * rz; J.j02 = -fx * xc * rz2;
  J.j11 = fy * rz; J.j12 = -fy * yc * rz2;
  return J;
}

// alpha_extent_sigma: alpha = o * exp(-q/2) falls below kAlphaMin once q > 2 ln(255 o).
SDS3D_HD float alpha_extent_sigma(float opacity) {
  const float ratio = opacity / kAlphaMin;
  return ratio > 1.f ? sqrtf(2.f * logf(ratio)) : 0.f;
}

// A sigma above this gives alpha < kAlphaMin for sure (with a margin for rounding), so the pixel
// can be skipped without evaluating exp; values at or below it take the exact test.
SDS3D_HD float sigma_cutoff(float opacity) {
  return opacity > kAlphaMin ? logf(opacity / kAlphaMin) * 1.0001f + 1e-4f : -1.f;
}

// Per-pixel Gaussian weight before the clamp: sigma = 0.5 d^T Q d with d = mean - pixel.
SDS3D_HD float gaussian_sigma(const float conic[3], float dx, float dy) {
  return 0.5f * (conic[0] * dx * dx + conic[2] * dy * dy) + conic[1] * dx * dy;
}

}  // namespace sds3d
