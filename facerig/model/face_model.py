"""The parametric face model (3DMM) used by every part of facerig.

See :mod:`facerig.model` for the conventions (centimetres, model frame, coefficient scaling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facerig.render.shading import vertex_normals
from facerig.render.transforms import axis_angle_to_matrix

__all__ = ["FaceModel", "LandmarkMap", "LinearBlendSkinning", "pca_from_samples"]


def _check_tensor(name: str, value, ndim: int | None = None, last: tuple | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(value.shape)}")
    if last is not None and tuple(value.shape[-len(last):]) != tuple(last):
        raise ValueError(f"{name}: expected trailing shape {last}, got shape {tuple(value.shape)}")
    return value


@dataclass
class LandmarkMap:
    """Landmarks as fixed linear combinations of mesh vertices.

    A landmark ``l`` sits at ``sum_j weights[l, j] * verts[vertex_ids[l, j]]``: a vertex index map
    has ``vertex_ids[l] = (i, i, i)`` and ``weights[l] = (1, 0, 0)``; a barycentric embedding on a
    triangle has the triangle's three vertex ids and the barycentric weights. Because every model
    in facerig is linear in its coefficients, a landmark embedded this way follows the surface for
    every identity and expression, and midpoint subdivision (which keeps the old vertices and
    their indices) keeps the map exact.

    Attributes:
        vertex_ids: (L, 3) int64 vertex indices.
        weights: (L, 3) floating barycentric weights, each row sums to 1.
    """

    vertex_ids: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self):
        _check_tensor("vertex_ids", self.vertex_ids, 2, (3,))
        _check_tensor("weights", self.weights, 2, (3,))
        if self.vertex_ids.shape != self.weights.shape:
            raise ValueError("vertex_ids and weights must have the same shape (L, 3)")
        self.vertex_ids = self.vertex_ids.long()

    @classmethod
    def from_indices(cls, indices, dtype=torch.float32) -> "LandmarkMap":
        """A map that picks vertices ``indices`` (L,) directly."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        w = torch.zeros(idx.numel(), 3, dtype=dtype)
        w[:, 0] = 1
        return cls(idx[:, None].repeat(1, 3), w)

    @classmethod
    def from_barycentric(cls, faces: torch.Tensor, face_ids, bary) -> "LandmarkMap":
        """A map from triangle ids (L,) into ``faces`` (F, 3) and barycentric weights (L, 3)."""
        fid = torch.as_tensor(face_ids, dtype=torch.long).reshape(-1)
        b = torch.as_tensor(bary, dtype=torch.float32).reshape(-1, 3)
        return cls(faces[fid].clone(), b)

    @property
    def is_index(self) -> bool:
        """True when every landmark is exactly one vertex."""
        return bool((self.weights[:, 0] == 1).all() and (self.vertex_ids == self.vertex_ids[:, :1]).all())

    @property
    def indices(self) -> torch.Tensor:
        """(L,) int64 vertex indices; ValueError when the map is not an index map."""
        if not self.is_index:
            raise ValueError("this landmark map is a barycentric embedding, not a vertex index map")
        return self.vertex_ids[:, 0]

    def __len__(self) -> int:
        return int(self.vertex_ids.shape[0])

    def apply(self, verts: torch.Tensor) -> torch.Tensor:
        """Landmark positions (B, L, D) from vertices (B, V, D) (any frame and unit)."""
        w = self.weights.to(device=verts.device, dtype=verts.dtype)
        picked = verts[:, self.vertex_ids.to(verts.device)]  # (B, L, 3, D)
        return (picked * w[None, :, :, None]).sum(2)

    def to(self, *args, **kwargs) -> "LandmarkMap":
        """Weights moved / cast like ``torch.Tensor.to``; the ids follow the device."""
        w = self.weights.to(*args, **kwargs)
        return LandmarkMap(self.vertex_ids.to(w.device), w)


_PARENT_ROOT = -1


@dataclass
class LinearBlendSkinning:
    """Linear blend skinning with pose correctives (the FLAME / SMPL family).

    Attributes:
        joint_names: names of the J joints (FLAME: global, neck, jaw, eye_left, eye_right).
        parents: (J,) int64 parent index of each joint, -1 for the root.
        j_regressor: (J, V) joint regressor applied to the rest shape.
        weights: (V, J) skinning weights.
        posedirs: (P, V, 3) pose-corrective blendshapes driven by the (J-1)*9 entries of
            ``R_j - I`` of the non-root joints (P = (J-1)*9).
    """

    joint_names: list
    parents: torch.Tensor
    j_regressor: torch.Tensor
    weights: torch.Tensor
    posedirs: torch.Tensor

    @property
    def pose_dim(self) -> int:
        """Length of the pose vector: 3 axis-angle numbers per joint."""
        return 3 * len(self.joint_names)

    def to(self, *args, **kwargs) -> "LinearBlendSkinning":
        """Float tensors moved / cast like ``torch.Tensor.to``; ``parents`` follow the device."""
        jr = self.j_regressor.to(*args, **kwargs)
        return LinearBlendSkinning(list(self.joint_names), self.parents.to(jr.device), jr,
                                   self.weights.to(*args, **kwargs), self.posedirs.to(*args, **kwargs))

    def __call__(self, rest: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Pose the rest shapes (B, V, 3) with axis-angle joint rotations (B, J*3) in radians."""
        B, V, _ = rest.shape
        J = len(self.joint_names)
        if pose.shape != (B, 3 * J):
            raise ValueError(f"pose: expected shape ({B}, {3 * J}), got {tuple(pose.shape)}")
        dt, dev = rest.dtype, rest.device
        jr = self.j_regressor.to(device=dev, dtype=dt)
        joints = torch.einsum("jv,bvc->bjc", jr, rest)  # (B, J, 3)
        rot = axis_angle_to_matrix(pose.reshape(B, J, 3))  # (B, J, 3, 3)
        eye = torch.eye(3, dtype=dt, device=dev)
        pose_feat = (rot[:, 1:] - eye).reshape(B, -1)  # (B, (J-1)*9)
        pd = self.posedirs.to(device=dev, dtype=dt)
        shaped = rest + torch.einsum("bp,pvc->bvc", pose_feat, pd)
        parents = self.parents.tolist()
        transforms = []
        for j in range(J):
            t = joints[:, j] if parents[j] < 0 else joints[:, j] - joints[:, parents[j]]
            local = torch.cat([torch.cat([rot[:, j], t[..., None]], -1),
                               torch.tensor([0, 0, 0, 1], dtype=dt, device=dev).expand(B, 1, 4)], 1)
            transforms.append(local if parents[j] < 0 else transforms[parents[j]] @ local)
        g = torch.stack(transforms, 1)  # (B, J, 4, 4)
        # remove the rest-pose joint location: G_j * [I, -j_rest]
        corr = torch.einsum("bjrc,bjc->bjr", g[..., :3, :3], joints)
        g = torch.cat([g[..., :3, :3], (g[..., :3, 3] - corr)[..., None]], -1)  # (B, J, 3, 4)
        w = self.weights.to(device=dev, dtype=dt)
        per_vertex = torch.einsum("vj,bjrc->bvrc", w, g)  # (B, V, 3, 4)
        return torch.einsum("bvrc,bvc->bvr", per_vertex[..., :3], shaped) + per_vertex[..., 3]


class FaceModel:
    """A linear face model: ``shape = mean + sum_k a_k I_k + sum_e w_e E_e`` (centimetres).

    Coefficient conventions (the same for every loader):
      * identity coefficients ``a`` (B, K_id) have prior ``a_k ~ N(0, identity_std[k]^2)``;
        ``identity_basis`` (K_id, V, 3) holds the modes (orthonormal columns for PCA models).
      * expression coefficients ``w`` (B, K_exp): blendshape weights (ICT / default model: 0 = rest,
        1 = full expression; ``expression_std`` gives the prior scale, 0.5 for blendshape rigs)
        or PCA coefficients (BFM 2017 / FLAME) with their standard deviations.
      * albedo coefficients ``b`` (B, K_alb), ``b_k ~ N(0, albedo_std[k]^2)``; colours are linear
        RGB-ish reflectance in [0, 1] per vertex.

    All tensors live on one device and dtype (:meth:`to`). ``faces`` (F, 3) int64 are counter
    clockwise seen from outside the face (normals point out of the face, toward a viewer in front).

    Attributes:
        name, unit ("cm"), license (text), source (where it came from).
        mean: (V, 3) mean / neutral shape in the model frame, centimetres.
        identity_basis: (K_id, V, 3); identity_std: (K_id,).
        expression_basis: (K_exp, V, 3) deltas; expression_std: (K_exp,); expression_names: list.
        albedo_mean: (V, 3) in [0, 1]; albedo_basis: (K_alb, V, 3); albedo_std: (K_alb,).
        faces: (F, 3) int64.
        uvs: (T, 2) or None, origin at the texture image's top-left, v pointing down (glTF).
        uv_faces: (F, 3) int64 into ``uvs`` or None when ``uvs`` are per vertex (T == V).
        landmark_maps: dict name -> :class:`LandmarkMap` ("ibug68" always; "mediapipe468" on the
            Face Mesh topology).
        masks: dict region name -> (V,) float weights in [0, 1] ("skin", "eyes", "lips", "brows").
        face_groups: dict name -> (F,) bool triangle sets; the default model has "mouth_opening"
            (the 18 triangles that close the mouth between the inner lips) and "eye_openings" (the
            28 triangles over the eyeballs); renderers may drop them (``faces[~group]``).
        lbs: optional :class:`LinearBlendSkinning` (FLAME): neck, jaw and eye rotations.
        detail: optional dict of the model's finer surface (:meth:`detailed`): for each new vertex
            of one level of :meth:`subdivide` (one per edge, in its order, E of them), its offset
            from the edge midpoint: ``"mean"`` (E, 3) cm, ``"identity"`` (K_id, E, 3),
            ``"expression"`` (K_exp, E, 3). The default model's come from the ICT-FaceKit surface
            it was sampled from (tools/build_default_model.py); None for other models.
    """

    def __init__(self, *, mean, faces, identity_basis=None, identity_std=None, expression_basis=None,
                 expression_std=None, expression_names=None, albedo_mean=None, albedo_basis=None,
                 albedo_std=None, uvs=None, uv_faces=None, landmark_maps=None, masks=None, face_groups=None,
                 lbs=None, name="face model", unit="cm", license="", source="", detail=None):
        mean = torch.as_tensor(mean)
        if not mean.is_floating_point():
            mean = mean.float()
        _check_tensor("mean", mean, 2, (3,))
        V = mean.shape[0]
        dt = mean.dtype

        def basis(name, b, std, default_std=1.0):
            if b is None:
                return torch.zeros(0, V, 3, dtype=dt), torch.zeros(0, dtype=dt)
            b = torch.as_tensor(b).to(dt).contiguous()
            _check_tensor(name, b, 3)
            if b.shape[1:] != (V, 3):
                raise ValueError(f"{name}: expected shape (K, {V}, 3), got {tuple(b.shape)}")
            if std is None:
                s = torch.full((b.shape[0],), default_std, dtype=dt)
            else:
                s = torch.as_tensor(std).to(dt).reshape(-1)
            if s.shape[0] != b.shape[0]:
                raise ValueError(f"{name}: {b.shape[0]} modes but {s.shape[0]} standard deviations")
            return b, s

        self.mean = mean.contiguous()
        self.identity_basis, self.identity_std = basis("identity_basis", identity_basis, identity_std)
        self.expression_basis, self.expression_std = basis("expression_basis", expression_basis, expression_std)
        n_exp = self.expression_basis.shape[0]
        if expression_names is None:
            expression_names = [f"exp{k:03d}" for k in range(n_exp)]
        self.expression_names = [str(x) for x in expression_names]
        if len(self.expression_names) != n_exp:
            raise ValueError(f"expression_names: {len(self.expression_names)} names for {n_exp} expression modes")
        if albedo_mean is None:
            albedo_mean = torch.full((V, 3), 0.6, dtype=dt)
        self.albedo_mean = torch.as_tensor(albedo_mean).to(dt).contiguous()
        if self.albedo_mean.shape != (V, 3):
            raise ValueError(f"albedo_mean: expected shape ({V}, 3), got {tuple(self.albedo_mean.shape)}")
        self.albedo_basis, self.albedo_std = basis("albedo_basis", albedo_basis, albedo_std)
        faces = torch.as_tensor(faces).long()
        _check_tensor("faces", faces, 2, (3,))
        if faces.numel() and (faces.min() < 0 or faces.max() >= V):
            raise ValueError(f"faces: indices must lie in [0, {V}), got [{int(faces.min())}, {int(faces.max())}]")
        self.faces = faces
        self.uvs = None if uvs is None else torch.as_tensor(uvs).to(dt)
        self.uv_faces = None if uv_faces is None else torch.as_tensor(uv_faces).long()
        if self.uvs is not None:
            _check_tensor("uvs", self.uvs, 2, (2,))
            if self.uv_faces is None and self.uvs.shape[0] != V:
                raise ValueError(f"uvs: per-vertex UVs need {V} rows, got {self.uvs.shape[0]} (or pass uv_faces)")
            if self.uv_faces is not None and self.uv_faces.shape != faces.shape:
                raise ValueError("uv_faces must have the same shape as faces")
        self.landmark_maps = {k: v.to(dtype=dt) for k, v in (landmark_maps or {}).items()}
        for k, lm in self.landmark_maps.items():
            if len(lm) and int(lm.vertex_ids.max()) >= V:
                raise ValueError(f"landmark map {k!r} refers to vertex {int(lm.vertex_ids.max())} >= {V}")
        self.masks = {k: torch.as_tensor(v).to(dt).reshape(-1) for k, v in (masks or {}).items()}
        for k, m in self.masks.items():
            if m.shape[0] != V:
                raise ValueError(f"mask {k!r}: expected {V} values, got {m.shape[0]}")
        self.face_groups = {k: torch.as_tensor(v).to(torch.bool).reshape(-1) for k, v in (face_groups or {}).items()}
        for k, g in self.face_groups.items():
            if g.shape[0] != faces.shape[0]:
                raise ValueError(f"face group {k!r}: expected {faces.shape[0]} values, got {g.shape[0]}")
        self.lbs = lbs.to(dtype=dt) if lbs is not None else None
        self.name, self.unit, self.license, self.source = name, unit, license, source
        self.detail = None
        if detail is not None:
            if lbs is not None:
                raise ValueError("detail: not supported on skinned models (lbs)")
            n_edges = int(self.midpoint_topology(faces, V)[0].shape[0])
            want = {"mean": (n_edges, 3), "identity": (self.n_identity, n_edges, 3),
                    "expression": (self.n_expression, n_edges, 3)}
            if set(detail) != set(want):
                raise ValueError(f"detail: expected the keys {sorted(want)}, got {sorted(detail)}")
            self.detail = {k: torch.as_tensor(v).to(dt).contiguous() for k, v in detail.items()}
            for k, shape in want.items():
                if tuple(self.detail[k].shape) != shape:
                    raise ValueError(f"detail[{k!r}]: expected shape {shape} (one row per mesh edge), "
                                     f"got {tuple(self.detail[k].shape)}")

    # ------------------------------------------------------------------ sizes and devices
    @property
    def n_vertices(self) -> int:
        """V, the number of vertices."""
        return int(self.mean.shape[0])

    @property
    def n_faces(self) -> int:
        """F, the number of triangles."""
        return int(self.faces.shape[0])

    @property
    def n_identity(self) -> int:
        """K_id, the number of identity modes."""
        return int(self.identity_basis.shape[0])

    @property
    def n_expression(self) -> int:
        """K_exp, the number of expression modes."""
        return int(self.expression_basis.shape[0])

    @property
    def n_albedo(self) -> int:
        """K_alb, the number of albedo modes."""
        return int(self.albedo_basis.shape[0])

    @property
    def pose_dim(self) -> int:
        """Length of the joint pose vector accepted by :meth:`shape` (0 without skinning)."""
        return 0 if self.lbs is None else self.lbs.pose_dim

    @property
    def device(self) -> torch.device:
        """Device of the model's tensors."""
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's tensors."""
        return self.mean.dtype

    @property
    def landmarks_ibug68(self) -> LandmarkMap:
        """The 68 iBUG / Multi-PIE landmarks (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67)."""
        return self.landmark_maps["ibug68"]

    @property
    def landmarks_mediapipe468(self) -> LandmarkMap | None:
        """The 468 Face Mesh landmarks, or None when the topology is not Face Mesh."""
        return self.landmark_maps.get("mediapipe468")

    def to(self, *args, **kwargs) -> "FaceModel":
        """A copy on another device / dtype (``torch.Tensor.to`` arguments); integer tensors keep
        their dtype."""
        def f(t):
            return None if t is None else t.to(*args, **kwargs)

        def i(t):
            return None if t is None else t.to(f(self.mean).device)

        return FaceModel(
            mean=f(self.mean), faces=i(self.faces), identity_basis=f(self.identity_basis),
            identity_std=f(self.identity_std), expression_basis=f(self.expression_basis),
            expression_std=f(self.expression_std), expression_names=self.expression_names,
            albedo_mean=f(self.albedo_mean), albedo_basis=f(self.albedo_basis), albedo_std=f(self.albedo_std),
            uvs=f(self.uvs), uv_faces=i(self.uv_faces),
            landmark_maps={k: v.to(*args, **kwargs) for k, v in self.landmark_maps.items()},
            masks={k: f(v) for k, v in self.masks.items()},
            face_groups={k: i(v) for k, v in self.face_groups.items()},
            lbs=None if self.lbs is None else self.lbs.to(*args, **kwargs),
            name=self.name, unit=self.unit, license=self.license, source=self.source,
            detail=None if self.detail is None else {k: f(v) for k, v in self.detail.items()})

    # ------------------------------------------------------------------ evaluation
    def _coeffs(self, name, c, k, batch=None):
        if c is None:
            b = 1 if batch is None else batch
            return torch.zeros(b, k, dtype=self.dtype, device=self.device)
        _check_tensor(name, c, 2)
        if c.shape[1] != k:
            raise ValueError(f"{name}: expected shape (B, {k}), got {tuple(c.shape)}")
        if batch is not None and c.shape[0] != batch:
            raise ValueError(f"{name}: batch size {c.shape[0]} does not match {batch}")
        return c

    def shape(self, identity: torch.Tensor | None = None, expression: torch.Tensor | None = None,
              pose: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices (B, V, 3) in the model frame, centimetres.

        Args:
            identity: (B, K_id) identity coefficients (None = zeros, the mean identity).
            expression: (B, K_exp) expression coefficients (None = neutral).
            pose: (B, pose_dim) axis-angle joint rotations in radians for skinned models (FLAME:
                global, neck, jaw, eye_left, eye_right); None = rest pose. Must be None for
                models without skinning.
        The result is linear in ``identity`` and ``expression`` (for a fixed pose) and follows
        their dtype and device (the model must be on the same device: see :meth:`to`).
        """
        batch = None
        for c in (identity, expression, pose):
            if c is not None:
                batch = c.shape[0]
                break
        a = self._coeffs("identity", identity, self.n_identity, batch)
        w = self._coeffs("expression", expression, self.n_expression, a.shape[0])
        dt = torch.promote_types(a.dtype, w.dtype)
        V = self.n_vertices
        flat = self.mean.to(dt).reshape(1, V * 3)
        if self.n_identity:
            flat = torch.addmm(flat, a.to(dt), self.identity_basis.to(dt).reshape(-1, V * 3))
        if self.n_expression:
            flat = torch.addmm(flat, w.to(dt), self.expression_basis.to(dt).reshape(-1, V * 3))
        verts = flat.expand(a.shape[0], -1).reshape(a.shape[0], V, 3)
        if pose is not None:
            if self.lbs is None:
                raise ValueError(f"pose: model {self.name!r} has no joints; pass pose=None")
            verts = self.lbs(verts, pose.to(dt))
        return verts

    def albedo(self, coeffs: torch.Tensor | None = None) -> torch.Tensor:
        """Per-vertex albedo (B, V, 3), RGB reflectance (clamped to [0, 1] only by the caller).

        Args:
            coeffs: (B, K_alb) albedo coefficients (None = the mean albedo, B = 1).
        """
        b = self._coeffs("coeffs", coeffs, self.n_albedo)
        V = self.n_vertices
        flat = self.albedo_mean.to(b.dtype).reshape(1, V * 3)
        if self.n_albedo:
            flat = torch.addmm(flat, b, self.albedo_basis.to(b.dtype).reshape(-1, V * 3))
        return flat.expand(b.shape[0], -1).reshape(b.shape[0], V, 3)

    def landmarks(self, verts: torch.Tensor, kind: str = "ibug68") -> torch.Tensor:
        """Landmarks (B, L, 3) of vertices (B, V, 3) (any frame: camera or model).

        ``kind`` is a key of :attr:`landmark_maps` ("ibug68", "mediapipe468" on Face Mesh models).
        """
        _check_tensor("verts", verts, 3)
        if verts.shape[1] != self.n_vertices:
            raise ValueError(f"verts: expected {self.n_vertices} vertices, got {verts.shape[1]}")
        if kind not in self.landmark_maps:
            raise ValueError(f"kind: {kind!r} is not one of this model's landmark maps {sorted(self.landmark_maps)}")
        return self.landmark_maps[kind].apply(verts)

    def sample(self, n: int, generator: torch.Generator | None = None, expression_scale: float = 1.0,
               expression_active: float = 0.1):
        """Random plausible faces: coefficients drawn from the model's Gaussian priors.

        Returns a dict with ``identity`` (n, K_id), ``expression`` (n, K_exp), ``albedo``
        (n, K_alb) coefficients, ``vertices`` (n, V, 3) cm and ``colors`` (n, V, 3) in [0, 1].
        Identity and albedo coefficients are ``~ N(0, std^2)``. Expressions: PCA models (BFM,
        FLAME) draw ``N(0, std^2) * expression_scale``; blendshape rigs (ICT, default) activate
        each blendshape with probability ``expression_active`` (a few at a time, as in real
        expressions) with weight ``|N(0, std^2)| * expression_scale`` clipped to [0, 1].
        All draws use ``generator`` on the CPU, so results are reproducible on every device.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")

        def draw(std):
            z = torch.randn(n, std.shape[0], generator=generator, dtype=std.dtype, device="cpu")
            return z.to(std.device) * std[None]

        a = draw(self.identity_std)
        w = draw(self.expression_std) * expression_scale
        if self.is_blendshape_rig:
            on = torch.rand(n, self.n_expression, generator=generator, dtype=w.dtype) < expression_active
            w = (w.abs() * on.to(w.device)).clamp(0, 1)
        b = draw(self.albedo_std)
        return {"identity": a, "expression": w, "albedo": b, "vertices": self.shape(a, w),
                "colors": self.albedo(b).clamp(0, 1)}

    @property
    def is_blendshape_rig(self) -> bool:
        """True when the expression modes are named blendshapes with weights in [0, 1] (ICT, default)."""
        return self.n_expression > 0 and not self.expression_names[0].startswith("exp")

    # ------------------------------------------------------------------ topology
    def subdivide(self, levels: int = 1) -> "FaceModel":
        """Midpoint subdivision: each triangle -> 4; new vertices are the midpoints of edges.

        Old vertices keep their indices and positions; every per-vertex quantity (mean, bases,
        albedo, masks, per-vertex UVs) of a new vertex is the average of its edge's two parents,
        so shapes and albedos are exactly the piecewise-linear interpolation of the coarse model
        and the landmark maps stay valid unchanged. Separate UV topologies (``uv_faces``) are
        subdivided the same way. Skinned models (``lbs``) subdivide their weights, regressor
        columns (zero for new vertices) and pose correctives alike.
        """
        if not isinstance(levels, int) or levels < 0:
            raise ValueError(f"levels: expected an int >= 0, got {levels!r}")
        m = self
        for _ in range(levels):
            m = m._subdivide_once()
        return m

    @property
    def has_detail(self) -> bool:
        """True when the model ships a finer surface (:attr:`detail`, :meth:`detailed`)."""
        return self.detail is not None

    def detailed(self, offsets: dict | None = None) -> "FaceModel":
        """The model's finer surface: :meth:`subdivide` once (about 4x the triangles; the original
        vertices keep their indices, positions and landmark maps), then each new vertex moved from
        its edge midpoint by :attr:`detail` - its mean, identity and expression rows, so the result
        is the same linear model (same code, same coefficients) with a surface that follows the
        source data between the coarse vertices (the default model: the ICT-FaceKit surface).
        Albedo, masks and UVs are interpolated as in :meth:`subdivide`.

        Args:
            offsets: other per-edge offsets in :attr:`detail`'s layout (e.g. a subdivision scheme's
                stencil, :func:`facerig.face.fit.butterfly_model`); default the model's own.

        Raises:
            ValueError: no ``offsets`` and the model has no detail level (:attr:`has_detail`; use
                :meth:`subdivide`), or a skinned model (``lbs``).
        """
        d = self.detail if offsets is None else offsets
        if d is None:
            raise ValueError(f"model {self.name!r} has no detail level; use subdivide() for a midpoint subdivision")
        if self.lbs is not None:
            raise ValueError("detailed: skinned models (lbs) are not supported; use subdivide()")
        sub = self.subdivide(1)
        V = self.n_vertices

        def moved(x, off, axis=0):
            x = x.movedim(axis, 0).clone()
            x[V:] = x[V:] + off.movedim(axis, 0).to(x)
            return x.movedim(0, axis)

        return FaceModel(
            mean=moved(sub.mean, d["mean"]), faces=sub.faces,
            identity_basis=moved(sub.identity_basis, d["identity"], 1), identity_std=sub.identity_std,
            expression_basis=moved(sub.expression_basis, d["expression"], 1), expression_std=sub.expression_std,
            expression_names=sub.expression_names, albedo_mean=sub.albedo_mean, albedo_basis=sub.albedo_basis,
            albedo_std=sub.albedo_std, uvs=sub.uvs, uv_faces=sub.uv_faces, landmark_maps=sub.landmark_maps,
            masks=sub.masks, face_groups=sub.face_groups, lbs=None, name=sub.name, unit=sub.unit,
            license=sub.license, source=sub.source)

    @staticmethod
    def midpoint_topology(faces: torch.Tensor, n: int):
        """One level of midpoint subdivision of a triangle list: ``(edges (E, 2) int64, faces (4F, 3))``.

        ``faces`` (F, 3) indexes ``n`` vertices; new vertex ``n + e`` is the midpoint of ``edges[e]``
        (unique edges, sorted ends, lexicographic order); each face becomes four, corners first then
        the middle one. Used by :meth:`subdivide`, the detail level and the butterfly scheme."""
        e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 0)
        e_sorted = torch.sort(e, 1).values
        uniq, inv = torch.unique(e_sorted, dim=0, return_inverse=True)
        F = faces.shape[0]
        mid = (inv + n).reshape(3, F).T  # (F, 3): m01, m12, m20
        a, b, c = faces.unbind(1)
        m01, m12, m20 = mid.unbind(1)
        new_faces = torch.cat([torch.stack([a, m01, m20], 1), torch.stack([m01, b, m12], 1),
                               torch.stack([m20, m12, c], 1), torch.stack([m01, m12, m20], 1)], 0)
        return uniq, new_faces

    def _subdivide_once(self) -> "FaceModel":
        V = self.n_vertices
        edges, faces = self.midpoint_topology(self.faces, V)

        def vert(x, axis=0):  # append edge midpoints along the vertex axis
            if x is None:
                return None
            x = x.movedim(axis, 0)
            out = torch.cat([x, 0.5 * (x[edges[:, 0]] + x[edges[:, 1]])], 0)
            return out.movedim(0, axis)

        uvs, uv_faces = self.uvs, self.uv_faces
        if uvs is not None and uv_faces is not None:
            uv_edges, uv_faces = self.midpoint_topology(uv_faces, uvs.shape[0])
            uvs = torch.cat([uvs, 0.5 * (uvs[uv_edges[:, 0]] + uvs[uv_edges[:, 1]])], 0)
        elif uvs is not None:
            uvs = vert(uvs)
        lbs = None
        if self.lbs is not None:
            jr = self.lbs.j_regressor
            jr = torch.cat([jr, jr.new_zeros(jr.shape[0], edges.shape[0])], 1)
            lbs = LinearBlendSkinning(list(self.lbs.joint_names), self.lbs.parents, jr,
                                      vert(self.lbs.weights), vert(self.lbs.posedirs, 1))
        return FaceModel(
            mean=vert(self.mean), faces=faces, identity_basis=vert(self.identity_basis, 1),
            identity_std=self.identity_std, expression_basis=vert(self.expression_basis, 1),
            expression_std=self.expression_std, expression_names=self.expression_names,
            albedo_mean=vert(self.albedo_mean), albedo_basis=vert(self.albedo_basis, 1),
            albedo_std=self.albedo_std, uvs=uvs, uv_faces=uv_faces, landmark_maps=self.landmark_maps,
            masks={k: vert(v) for k, v in self.masks.items()},
            face_groups={k: v.repeat(4) for k, v in self.face_groups.items()}, lbs=lbs, name=self.name, unit=self.unit,
            license=self.license, source=self.source)

    def vertex_normals(self, verts: torch.Tensor) -> torch.Tensor:
        """Area-weighted unit vertex normals (B, V, 3) of vertices (B, V, 3) (see
        :func:`facerig.render.vertex_normals`)."""
        return vertex_normals(verts, self.faces.to(verts.device))

    def summary(self) -> dict:
        """A JSON-friendly description (counts, unit, landmark maps, regions, licence)."""
        return {
            "name": self.name, "unit": self.unit, "vertices": self.n_vertices, "faces": self.n_faces,
            "identity_modes": self.n_identity, "expression_modes": self.n_expression,
            "albedo_modes": self.n_albedo, "expression_names": list(self.expression_names),
            "uvs": None if self.uvs is None else int(self.uvs.shape[0]),
            "landmark_maps": {k: ("vertex indices" if v.is_index else "barycentric") + f", {len(v)}"
                              for k, v in self.landmark_maps.items()},
            "regions": {k: int((v > 0.5).sum()) for k, v in self.masks.items()},
            "face_groups": {k: int(v.sum()) for k, v in self.face_groups.items()},
            "joints": [] if self.lbs is None else list(self.lbs.joint_names),
            "source": self.source, "license": self.license,
        }

    def __repr__(self) -> str:
        return (f"FaceModel(name={self.name!r}, V={self.n_vertices}, F={self.n_faces}, K_id={self.n_identity}, "
                f"K_exp={self.n_expression}, K_alb={self.n_albedo}, unit={self.unit!r})")


def pca_from_samples(deltas: torch.Tensor, keep: int | None = None):
    """Orthonormal modes and standard deviations from K sample deltas (K, V, 3) drawn as
    ``sum_k z_k deltas_k`` with ``z ~ N(0, I)``: returns (basis (K', V, 3), std (K',))."""
    K, V, _ = deltas.shape
    A = deltas.reshape(K, V * 3).double().T
    U, S, _ = torch.linalg.svd(A, full_matrices=False)
    keep = K if keep is None else min(keep, K)
    return U[:, :keep].T.reshape(keep, V, 3).to(deltas.dtype), S[:keep].to(deltas.dtype)

