// Mesh visibility pass on the CPU: for every pixel the id of the nearest triangle and its depth.
//
// Per camera (OpenMP over cameras): project the vertices, set up each triangle (edges, inverse
// depths, pixel bounding box) and bin the triangles into 8x8 pixel tiles in ascending id order.
// Then z-buffer every tile independently (OpenMP over cameras x tiles). Only a strictly nearer
// triangle replaces the current one, so at equal depth the lower triangle id wins, as in the
// PyTorch reference.
//
// Triangles with a vertex closer than `near` (or behind the camera) are skipped, not clipped.

// Same rounding as the PyTorch reference: no fused multiply-add anywhere in this file.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

// A plain C ABI over raw pointers (no torch headers, so it builds in about a second): the caller
// (cuda/_native_mesh.py) checks shapes and dtypes and allocates the outputs.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "mesh_math.h"

namespace {

constexpr int kTile = 8;

struct Triangle {
  sds3d::Edge edges[3];  // edges[k] is opposite vertex k
  float inv_z[3];
  int x0, x1, y0, y1;  // inclusive pixel bounding box, clipped to the image
  bool visible;
};

struct Frame {
  int64_t cameras, width, height, tiles_x, tiles_y;
  int64_t tiles() const { return tiles_x * tiles_y; }
};

Triangle setup_triangle(const float* uvz, const int64_t* face, const Frame& frame, float near,
                        bool cull_backfaces) {
  Triangle tri;
  tri.visible = false;
  float u[3], v[3];
  for (int k = 0; k < 3; ++k) {
    const float* p = uvz + 3 * face[k];
    if (!(p[2] >= near)) return tri;
    u[k] = p[0];
    v[k] = p[1];
    tri.inv_z[k] = 1.0f / p[2];
  }
  const float area = sds3d::signed_area(u[0], v[0], u[1], v[1], u[2], v[2]);
  if (!(area > 0.0f || area < 0.0f) || (cull_backfaces && area > 0.0f)) return tri;

  const float fx0 = sds3d::first_pixel(std::min({u[0], u[1], u[2]}));
  const float fx1 = sds3d::last_pixel(std::max({u[0], u[1], u[2]}));
  const float fy0 = sds3d::first_pixel(std::min({v[0], v[1], v[2]}));
  const float fy1 = sds3d::last_pixel(std::max({v[0], v[1], v[2]}));
  const float max_x = static_cast<float>(frame.width - 1), max_y = static_cast<float>(frame.height - 1);
  if (!(fx0 <= fx1 && fy0 <= fy1) || fx1 < 0.0f || fy1 < 0.0f || fx0 > max_x || fy0 > max_y) return tri;
  tri.x0 = static_cast<int>(std::max(fx0, 0.0f));
  tri.x1 = static_cast<int>(std::min(fx1, max_x));
  tri.y0 = static_cast<int>(std::max(fy0, 0.0f));
  tri.y1 = static_cast<int>(std::min(fy1, max_y));

  const float orientation = area > 0.0f ? 1.0f : -1.0f;
  for (int k = 0; k < 3; ++k) {
    const int a = (k + 1) % 3, b = (k + 2) % 3;
    tri.edges[k] = sds3d::make_edge(u[a], v[a], u[b], v[b], orientation);
  }
  tri.visible = true;
  return tri;
}

// One camera's visible triangles binned into tiles: tile t lists ids[start[t], start[t + 1]), ascending.
struct Bins {
  std::vector<int64_t> start, ids;
};

template <typename Visit>
void for_each_tile(const Triangle& tri, const Frame& frame, Visit&& visit) {
  for (int ty = tri.y0 / kTile; ty <= tri.y1 / kTile; ++ty)
    for (int tx = tri.x0 / kTile; tx <= tri.x1 / kTile; ++tx) visit(ty * frame.tiles_x + tx);
}

// Project the vertices for one camera, set up its triangles and bin them (count, prefix sum, fill).
void prepare_camera(const float* vertices, int64_t num_vertices, const int64_t* faces, int64_t num_faces,
                    const float* viewmat, const float* K, const Frame& frame, float near, bool cull_backfaces,
                    Triangle* triangles, Bins& bins) {
  std::vector<float> uvz(num_vertices * 3);
  for (int64_t i = 0; i < num_vertices; ++i) {
    const float* p = vertices + 3 * i;
    sds3d::project_point(viewmat, K, p[0], p[1], p[2], uvz[3 * i], uvz[3 * i + 1], uvz[3 * i + 2]);
  }
  for (int64_t f = 0; f < num_faces; ++f)
    triangles[f] = setup_triangle(uvz.data(), faces + 3 * f, frame, near, cull_backfaces);

  bins.start.assign(frame.tiles() + 1, 0);
  for (int64_t f = 0; f < num_faces; ++f)
    if (triangles[f].visible) for_each_tile(triangles[f], frame, [&](int64_t t) { ++bins.start[t + 1]; });
  for (int64_t t = 0; t < frame.tiles(); ++t) bins.start[t + 1] += bins.start[t];
  bins.ids.resize(bins.start.back());
  std::vector<int64_t> cursor(bins.start.begin(), bins.start.end() - 1);
  for (int64_t f = 0; f < num_faces; ++f)
    if (triangles[f].visible) for_each_tile(triangles[f], frame, [&](int64_t t) { bins.ids[cursor[t]++] = f; });
}

// Z-buffer one tile over its binned triangles (ascending ids); writes ids and depths.
void raster_tile(const Triangle* triangles, const int64_t* ids, int64_t count, int tile_x0,
                 int tile_y0, const Frame& frame, int64_t* out_ids, float* out_depth) {
  const int tile_x1 = std::min<int>(tile_x0 + kTile, frame.width) - 1;
  const int tile_y1 = std::min<int>(tile_y0 + kTile, frame.height) - 1;
  float best_z[kTile * kTile];
  int64_t best_id[kTile * kTile];
  std::fill(best_z, best_z + kTile * kTile, std::numeric_limits<float>::infinity());
  std::fill(best_id, best_id + kTile * kTile, int64_t{-1});

  for (int64_t i = 0; i < count; ++i) {
    const Triangle& tri = triangles[ids[i]];
    const int x0 = std::max(tri.x0, tile_x0), x1 = std::min(tri.x1, tile_x1);
    const int y0 = std::max(tri.y0, tile_y0), y1 = std::min(tri.y1, tile_y1);
    for (int y = y0; y <= y1; ++y) {
      const float py = static_cast<float>(y) + 0.5f;
      for (int x = x0; x <= x1; ++x) {
        const float px = static_cast<float>(x) + 0.5f;
        const float e0 = sds3d::edge_value(tri.edges[0], px, py);
        const float e1 = sds3d::edge_value(tri.edges[1], px, py);
        const float e2 = sds3d::edge_value(tri.edges[2], px, py);
        if (!(sds3d::edge_covers(tri.edges[0], e0) && sds3d::edge_covers(tri.edges[1], e1) &&
              sds3d::edge_covers(tri.edges[2], e2)))
          continue;
        const float z = sds3d::interpolate_depth(e0, e1, e2, tri.inv_z[0], tri.inv_z[1], tri.inv_z[2]);
        const int slot = (y - tile_y0) * kTile + (x - tile_x0);
        if (z < best_z[slot]) {
          best_z[slot] = z;
          best_id[slot] = ids[i];
        }
      }
    }
  }
  for (int y = tile_y0; y <= tile_y1; ++y) {
    for (int x = tile_x0; x <= tile_x1; ++x) {
      const int slot = (y - tile_y0) * kTile + (x - tile_x0);
      out_ids[y * frame.width + x] = best_id[slot];
      out_depth[y * frame.width + x] = best_id[slot] >= 0 ? best_z[slot] : 0.0f;
    }
  }
}

}  // namespace

// vertices [1 or B, V, 3] float32 world (shared_vertices: one set for every camera), faces [F, 3] int64,
// viewmats [B, 4, 4], Ks [B, 3, 3] float32 -> face_ids [B, H, W] int64 with -1 on background, depth
// [B, H, W] float32 with 0 there (every pixel written).
extern "C" void sds3d_mesh_visibility(const float* vertex_ptr, int64_t num_vertices, bool shared_vertices,
                                      const int64_t* face_ptr, int64_t num_faces, const float* viewmat_ptr,
                                      const float* K_ptr, int64_t cameras, int64_t width, int64_t height,
                                      double near, bool cull_backfaces, int64_t* id_ptr, float* depth_ptr) {
  Frame frame{cameras, width, height, (width + kTile - 1) / kTile, (height + kTile - 1) / kTile};
  const float near_f = static_cast<float>(near);
  std::vector<Triangle> triangles(frame.cameras * num_faces);
  std::vector<Bins> bins(frame.cameras);
#pragma omp parallel for
  for (int64_t b = 0; b < frame.cameras; ++b) {
    prepare_camera(vertex_ptr + (shared_vertices ? 0 : b) * num_vertices * 3, num_vertices, face_ptr, num_faces,
                   viewmat_ptr + 16 * b, K_ptr + 9 * b, frame, near_f, cull_backfaces,
                   triangles.data() + b * num_faces, bins[b]);
  }
#pragma omp parallel for schedule(dynamic)
  for (int64_t job = 0; job < frame.cameras * frame.tiles(); ++job) {
    const int64_t b = job / frame.tiles(), t = job % frame.tiles();
    const Bins& camera_bins = bins[b];
    raster_tile(triangles.data() + b * num_faces, camera_bins.ids.data() + camera_bins.start[t],
                camera_bins.start[t + 1] - camera_bins.start[t], static_cast<int>((t % frame.tiles_x) * kTile),
                static_cast<int>((t / frame.tiles_x) * kTile), frame, id_ptr + b * height * width,
                depth_ptr + b * height * width);
  }
}
