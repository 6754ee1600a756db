// Per-element math of the mesh visibility pass, shared by the C++ kernel and a future CUDA twin.
//
// The PyTorch reference (`cuda/_torch_mesh.py`) performs the same float32 operations in the same
// order, so both backends pick the same triangle for every pixel. That only holds without fused
// multiply-add contraction: C++ callers include this header after `#pragma GCC optimize
// ("fp-contract=off")`, CUDA callers must compile with `nvcc --fmad=false`.
//
// Conventions: OpenCV cameras (x right, y down, z forward), pixel (x, y) has its centre at
// (x + 0.5, y + 0.5), row-major 4x4 world->camera matrices and 3x3 pixel intrinsics.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define SDS3D_HD __host__ __device__
#else
#define SDS3D_HD
#endif

namespace sds3d {

// World point -> pixel coordinates (u, v) and camera-space depth z.
SDS3D_HD inline void project_point(const float* viewmat, const float* K, float X, float Y, float Z,
                                   float& u, float& v, float& z) {
  const float xc = ((viewmat[0] * X + viewmat[1] * Y) + viewmat[2] * Z) + viewmat[3];
  const float yc = ((viewmat[4] * X + viewmat[5] * Y) + viewmat[6] * Z) + viewmat[7];
  z = ((viewmat[8] * X + viewmat[9] * Y) + viewmat[10] * Z) + viewmat[11];
  u = (K[0] * xc + K[1] * yc) / z + K[2];
  v = (K[4] * yc) / z + K[5];
}

// Twice the signed screen area of (a, b, c); negative for a triangle whose vertices run
// counter-clockwise around its outward normal and that faces the camera (front-facing).
SDS3D_HD inline float signed_area(float ax, float ay, float bx, float by, float cx, float cy) {
  return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax);
}

// One triangle edge a->b prepared for coverage tests. The edge function is always evaluated from
// the lexicographically smaller endpoint, so two triangles sharing an edge compute exactly
// opposite values and a pixel centre on the edge belongs to exactly one of them (top-left rule).
struct Edge {
  float lo_x, lo_y;  // canonical start point
  float dx, dy;      // canonical end point minus start point, negated where needed so that the
                     // edge function is non-negative inside the triangle
  bool top_left;     // pixel centres exactly on this edge are covered
};

// `orientation` is +1 or -1, the sign of the triangle's signed_area.
SDS3D_HD inline Edge make_edge(float ax, float ay, float bx, float by, float orientation) {
  const bool swap = bx < ax || (bx == ax && by < ay);
  const float flip = swap ? -orientation : orientation;
  Edge edge;
  edge.lo_x = swap ? bx : ax;
  edge.lo_y = swap ? by : ay;
  edge.dx = flip * (swap ? ax - bx : bx - ax);
  edge.dy = flip * (swap ? ay - by : by - ay);
  // Inward normal (-dy, dx) of a->b, flipped for clockwise triangles: a top-left edge has its
  // interior to the right (normal x > 0) or, if horizontal, below it (normal y > 0).
  const float normal_x = orientation * -(by - ay);
  const float normal_y = orientation * (bx - ax);
  edge.top_left = normal_x > 0.0f || (normal_x == 0.0f && normal_y > 0.0f);
  return edge;
}

// Edge function at pixel centre (px, py): >= 0 inside, proportional to the barycentric weight of
// the vertex opposite the edge.
SDS3D_HD inline float edge_value(const Edge& edge, float px, float py) {
  return edge.dx * (py - edge.lo_y) - edge.dy * (px - edge.lo_x);
}

SDS3D_HD inline bool edge_covers(const Edge& edge, float value) {
  return edge.top_left ? value >= 0.0f : value > 0.0f;
}

// Perspective-correct camera-space depth from the three edge values e_k (weight of vertex k) and
// the vertices' inverse depths.
SDS3D_HD inline float interpolate_depth(float e0, float e1, float e2, float inv_z0, float inv_z1,
                                        float inv_z2) {
  return ((e0 + e1) + e2) / ((e0 * inv_z0 + e1 * inv_z1) + e2 * inv_z2);
}

// Inclusive range of pixel indices whose centres lie in [lo, hi] along one image axis (as floats,
// so callers can clip before converting to int).
SDS3D_HD inline float first_pixel(float lo) { return std::ceil(lo - 0.5f); }
SDS3D_HD inline float last_pixel(float hi) { return std::floor(hi - 0.5f); }

}  // namespace sds3d
