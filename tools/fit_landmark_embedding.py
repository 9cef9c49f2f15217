#!/usr/bin/env python
"""Learn where the annotated iBUG-68 points lie on the default model's surface, from real faces.

facerig's ``"ibug68"`` landmark map is MediaPipe's 468 -> 68 correspondence: it is what the fitter
and the encoder's landmark loss compare with the detector's points, and it must stay that. But
people who annotate the 68 points (the iBUG / 300-W convention, and dlib's predictor trained on
it) put the jaw points on the visible jaw line, lower than MediaPipe's face-oval vertices, and the
brows and nose points a little elsewhere too: on ``../shared/data/real_faces_dev`` the mean
per-point offset of MediaPipe's 68 subset is 8 % of the eye-corner distance at the jaw.

This tool fits, for each of the 68 points, a point on the model's triangle mesh (a triangle and
barycentric weights) whose projection through facerig's own fits best matches the labelled points
over many real frames:

1. ``fit_image`` (default options) and ``reconstruct`` (refine 0) on every labelled frame; the
   fitted camera-frame vertices and focal are cached (``--cache``), so re-runs are fast;
2. for each landmark and every triangle, the barycentric weights minimising the summed squared
   image error (normalised by each face's eye-corner distance) of ``sum_j w_j proj(v_j)`` - the
   projection of the barycentric point, to first order - under ``w >= 0, sum w = 1``; the best
   triangle wins;
3. **cross-validation by video**: the embedding is learned on two videos and scored on the third,
   for each of the three splits, for fits and encoder outputs, beside the MediaPipe-correspondence
   map (NME = mean point error / outer-eye-corner distance);
4. ``--write``: the embedding learned on all labelled frames is written to
   ``assets/default_landmarks68.npz`` (``vertex_ids`` (68, 3) int32, ``weights`` (68, 3) float32).
   Not yet used by the library: attaching it to the default model as an ``"ibug68_annotated"`` map
   for the ``landmarks68`` that fits report is the next step (see the README's real-face section).

The labels are dlib's 68-point predictor's (see the data README): the embedding is 68 triangle ids
and barycentric weights fitted to them, the convention of the 68 points on this mesh; neither dlib
nor its model is used or shipped.

Run:  .venv/bin/python tools/fit_landmark_embedding.py [--cache out/landmark_fits.npz]   (about 11 min, 1 thread, loaded)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import facerig
from facerig.io import atomic_path
from facerig.landmarks import load_image
from facerig.model import load_model

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "real_faces_dev"
OUT = REPO / "assets" / "default_landmarks68.npz"


def collect(cache: Path) -> dict:
    """Fits of every labelled frame: dict of arrays ``truth`` (N, 68, 2) px, ``video`` (N,),
    ``{fit,rec}_verts`` (N, 468, 3) camera-frame cm, ``{fit,rec}_focal`` (N,) px, ``size`` (N, 2)
    (H, W). Cached in ``cache``; frames are added incrementally."""
    labels = json.loads((DATA / "labels.json").read_text())["faces"]
    have = dict(np.load(cache, allow_pickle=False)) if cache.exists() else {}
    done = set(have.get("files", np.array([], str)).tolist())
    rows = {k: list(v) for k, v in have.items()}
    todo = [f for f in labels if f["file"] not in done]
    t0 = time.perf_counter()
    for i, f in enumerate(todo):
        img = load_image(DATA / f["file"])
        fit = facerig.fit_image(img)
        rec = facerig.reconstruct(img, refine=0)
        for key, value in (("files", f["file"]), ("video", Path(f["video"]).stem),
                           ("truth", np.asarray(f["points"], np.float64)), ("size", np.array(img.shape[:2])),
                           ("fit_verts", fit.vertices.detach().double().cpu().numpy()[:468]),
                           ("fit_focal", float(fit.code.focal.reshape(-1)[0])),
                           ("rec_verts", rec.vertices.detach().double().cpu().numpy()[:468]),
                           ("rec_focal", float(rec.code.focal.reshape(-1)[0]))):
            rows.setdefault(key, []).append(value)
        if (i + 1) % 20 == 0 or i + 1 == len(todo):
            print(f"  fitted {i + 1}/{len(todo)} frames ({time.perf_counter() - t0:.0f} s)", flush=True)
            arrays = {k: np.asarray(v) for k, v in rows.items()}
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
    return {k: np.asarray(v) for k, v in rows.items()}


def project(verts: np.ndarray, focal: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(N, V, 3) camera-frame vertices -> (N, V, 2) pixels (OpenCV pinhole, principal point at the
    image centre, as facerig's fits use)."""
    cx, cy = size[:, 1] / 2.0, size[:, 0] / 2.0
    z = verts[..., 2]
    return np.stack([focal[:, None] * verts[..., 0] / z + cx[:, None],
                     focal[:, None] * verts[..., 1] / z + cy[:, None]], -1)


def _simplex_ls(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin_w ||A w - b||^2 over the triangle simplex (w >= 0, sum w = 1), for a batch:
    A (T, M, 3), b (T, M) -> w (T, 3). Interior solution of the equality-constrained problem;
    when it leaves the simplex, the best of the three edges (1-D problems clipped to [0, 1])."""
    T = A.shape[0]
    # parametrise w = e0 + s * (e1 - e0) + t * (e2 - e0): affine in (s, t)
    base = A[..., 0]
    D = np.stack([A[..., 1] - base, A[..., 2] - base], -1)       # (T, M, 2)
    r = b - base
    G = np.einsum("tmi,tmj->tij", D, D) + 1e-12 * np.eye(2)
    st = np.linalg.solve(G, np.einsum("tmi,tm->ti", D, r)[..., None])[..., 0]
    w = np.stack([1 - st.sum(-1), st[:, 0], st[:, 1]], -1)
    inside = (w >= 0).all(-1)
    best_w = w.copy()
    best_e = np.where(inside, ((np.einsum("tmk,tk->tm", A, w) - b) ** 2).sum(-1), np.inf)
    for i, j in ((0, 1), (1, 2), (2, 0)):                         # edges: w = (1-u) e_i + u e_j
        d = A[..., j] - A[..., i]
        u = np.clip((d * (b - A[..., i])).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0.0, 1.0)
        we = np.zeros((T, 3))
        we[np.arange(T), i] = 1 - u
        we[np.arange(T), j] += u
        e = ((np.einsum("tmk,tk->tm", A, we) - b) ** 2).sum(-1)
        better = ~inside & (e < best_e)
        best_w[better], best_e[better] = we[better], e[better]
    return best_w


def learn_embedding(proj: np.ndarray, truth: np.ndarray, faces: np.ndarray):
    """Per landmark, the triangle and barycentric weights whose (first-order) projection best fits
    the labels. proj (N, V, 2) projected vertices, truth (N, 68, 2) labels, faces (F, 3).
    Returns vertex_ids (68, 3) int64 and weights (68, 3) float64."""
    iod = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)             # (N,)
    P = proj / iod[:, None, None]
    L = truth / iod[:, None, None]
    tri = P[:, faces]                                                       # (N, F, 3, 2)
    # rows: frames x {x, y}; columns: the triangle's three vertices
    A = tri.transpose(1, 0, 3, 2).reshape(len(faces), -1, 3)                # (F, 2N, 3)
    ids, ws = np.zeros((68, 3), np.int64), np.zeros((68, 3))
    for k in range(68):
        b = np.broadcast_to(L[:, k].reshape(1, -1), (len(faces), A.shape[1]))
        w = _simplex_ls(A, b)
        err = ((np.einsum("fmk,fk->fm", A, w) - b) ** 2).sum(-1)
        f = int(np.argmin(err))
        ids[k], ws[k] = faces[f], w[f]
    return ids, ws


def apply_map(verts_proj: np.ndarray, ids: np.ndarray, ws: np.ndarray) -> np.ndarray:
    """(N, V, 2) projections -> (N, 68, 2) by the (first-order) embedding."""
    return (verts_proj[:, ids] * ws[None, ..., None]).sum(-2)


def nme(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N,) mean point error over the outer-eye-corner distance."""
    iod = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)
    return np.linalg.norm(pred - truth, axis=-1).mean(-1) / iod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=str(REPO / "out" / "landmark_fits.npz"), help="fits cache (.npz)")
    ap.add_argument("--write", action="store_true", help=f"write the embedding learned on all frames to {OUT}")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not (DATA / "labels.json").exists():
        raise SystemExit(f"no labelled real faces at {DATA} (see ../shared/data/README.md)")
    torch.set_num_threads(args.threads)
    d = collect(Path(args.cache))
    model = load_model("default")
    faces = model.faces.cpu().numpy()
    base = model.landmarks_ibug68
    base_ids, base_w = base.vertex_ids.cpu().numpy(), base.weights.cpu().double().numpy()
    truth, videos = d["truth"], d["video"]
    proj = {m: project(d[f"{m}_verts"], d[f"{m}_focal"], d["size"]) for m in ("fit", "rec")}
    names = {"fit": "fit_image", "rec": "reconstruct (refine 0)"}
    print(f"{len(truth)} labelled frames; cross-validation by video (learn on the others, score on one)")
    print("\n| method | map | " + " | ".join(sorted(set(videos))) + " | all (CV) |")
    print("|---|---|" + "---|" * (len(set(videos)) + 1))
    for m in ("fit", "rec"):
        for label in ("MediaPipe correspondence (ibug68)", "annotated (learned, held-out video)"):
            cells, errs = [], np.zeros(len(truth))
            for v in sorted(set(videos)):
                test = videos == v
                if label.startswith("MediaPipe"):
                    ids, ws = base_ids, base_w
                else:
                    ids, ws = learn_embedding(proj[m][~test], truth[~test], faces)
                errs[test] = nme(apply_map(proj[m][test], ids, ws), truth[test])
                cells.append(f"{errs[test].mean():.4f}")
            print(f"| {names[m]} | {label} | " + " | ".join(cells) + f" | {errs.mean():.4f} |")
    if args.write:
        # learned on the fitter's outputs (the encoder's codes are trained to agree with them)
        ids, ws = learn_embedding(proj["fit"], truth, faces)
        in_sample = nme(apply_map(proj["fit"], ids, ws), truth).mean()
        with atomic_path(OUT) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, vertex_ids=ids.astype(np.int32), weights=ws.astype(np.float32),
                         frames=np.int32(len(truth)))
        print(f"\nwrote {OUT.relative_to(REPO)}: learned on all {len(truth)} frames (in-sample fit NME {in_sample:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
