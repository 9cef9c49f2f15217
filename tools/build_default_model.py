#!/usr/bin/env python
"""Build facerig's default face model (assets/default_model.npz) from permissively licensed data.

Inputs (read from ``../shared/data`` or ``--data``; never copied into the repository):
  * ``mediapipe/canonical_face_model.obj`` (Apache-2.0): topology, UVs; vertex i = Face Mesh
    landmark i.
  * ``ict-facekit/`` (MIT): ``ict_face_area_morphs.npz`` (neutral, 100 identity meshes, 57
    expression meshes, face area = vertices 0..9408), ``generic_neutral_mesh.obj`` (polygons),
    ``vertex_indices.json`` (the 68 iBUG landmark vertices, the 53 ARKit expression names).

Steps
  1. Similarity (Umeyama, with scale) from the canonical mesh to the ICT neutral face, from 27
     facial feature points (``feature_correspondences``): each is defined on the canonical mesh
     by MediaPipe's own Face Mesh contour index sets (``mediapipe.solutions.face_mesh_connections``,
     Apache-2.0, in the installed wheel) and the mesh geometry (eye and mouth corners = extreme-x
     points of the eye / lip contours, eyelid tops / bottoms = extreme-y points, lip midline
     points, brow ends and centroids from the upper brow chain, eye-contour centroids, nose tip =
     the most forward vertex, top and bottom of the nose contour), and on the ICT face by the
     iBUG-68 landmark vertices of ICT's ``vertex_indices.json`` (MIT) that mark the same feature
     (e.g. outer eye corner 36 / 45, mean of 37 and 38 for the upper eyelid). No third-party
     MediaPipe -> iBUG index table is used.
  2. Non-rigid registration of the canonical mesh onto the ICT face surface: closest-point ICP
     with a uniform-Laplacian deformation regulariser whose weight decreases over stages, and a
     feature-point term (the same 27 correspondences) that guides the first stages and fades to
     zero.
  3. Each registered canonical vertex -> closest point on the ICT surface (triangle + barycentric
     coordinates). Every ICT shape is sampled there: the identity deltas (100, sampled with N(0, 1)
     coefficients) are re-orthogonalised by SVD (orthonormal modes + standard deviations), the
     53 ARKit expression deltas are kept as named blendshapes.
  4. The result is expressed in the canonical mesh's frame (x to the subject's left, y up, z out of
     the face) by the inverse rigid part of the similarity; the size stays ICT's (centimetres).
  5. iBUG-68 map: the canonical vertex nearest to each ICT landmark vertex (distance summed over
     the neutral and the jawOpen shapes, which separates the touching inner lips), self-checked
     against MediaPipe's contour sets (do the derived eye / lip / brow / nose points lie on the
     matching Face Mesh contour?); a dense variant embeds the 17 jaw points as barycentric points
     on the surface (the canonical mesh is coarse along the jaw).
  6. Region masks and triangle groups (the triangles closing the mouth and covering the eyes)
     from MediaPipe's own contour index sets (``mediapipe.solutions``), and a hand-designed,
     smooth albedo model (see ``build_albedo``).
  7. The detail level (``FaceModel.detailed()``: one midpoint subdivision, 468 -> 1833 vertices,
     whose new vertices lie on the ICT surface): the midpoint of every edge of the registered
     mesh is embedded at its closest ICT surface point and every ICT shape is sampled there, like
     the coarse vertices (identity deltas through the same SVD rotation, so the same coefficients
     drive both levels). Stored as offsets from the edge midpoints (``detail_*``, float16).
     Edges of the triangles closing the mouth / covering the eyes, and edges whose sampled
     expression deltas stray more than ``DETAIL_MAX_STRAY`` from their endpoints' mean (the
     embedding jumped across the touching lips or eyelids), keep the midpoint.

The steps are :func:`facerig.model.build.build_default_model`; this script reads the arguments and
writes the file. Run: ``.venv/bin/python tools/build_default_model.py`` (about 10-30 s). It prints the
registration residuals, the landmark-map self-check and the transfer-error tables (mm) and
writes ``assets/default_model.npz`` atomically. The output is deterministic.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from facerig.io import atomic_open
from facerig.model.build import build_default_model, missing_inputs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    ap.add_argument("--out", type=Path, default=REPO / "assets" / "default_model.npz")
    ap.add_argument("--identity-modes", type=int, default=100, help="identity modes kept (<= 100)")
    ap.add_argument("--samples", type=int, default=20, help="random identities in the error table")
    args = ap.parse_args(argv)
    t_start = time.time()
    missing = missing_inputs(args.data)
    if missing:
        print(f"missing input {missing[0]}", file=sys.stderr)
        return 2
    arrays = build_default_model(args.data, identity_modes=args.identity_modes, samples=args.samples)
    with atomic_open(args.out, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    print(f"\nwrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {time.time() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
