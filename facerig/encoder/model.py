"""The MoFA encoder: face crop -> graphic code vector (``GraphicCode.to_vector`` layout).

:class:`FaceEncoder` = a backbone (:mod:`facerig.encoder.networks`) + a linear head + a fixed,
differentiable *parametrisation* that turns the head's raw outputs into a graphic code in the
crop's camera:

====================  ================================================================================
code part             from raw output ``r``
====================  ================================================================================
identity, expression,  ``r * std`` (the model's prior standard deviations: whitened coefficients)
albedo
rotation               ``r * 0.5`` (axis-angle radians, camera frame)
translation            the face *anchor* (centre of the mean face's landmark box, model frame) lands at
                       crop pixel ``(S/2, S/2) + r_uv * S/4`` at depth ``Z = Z0 * exp(0.25 r_z)``:
                       ``t = P - R(rotation) @ MODEL_TO_OPENCV @ anchor`` with ``P`` the back-projection
                       of that pixel and depth through the crop camera (focal, principal point)
focal                  the input focal (the encoder does not predict the camera)
sh                     unit ambient light + ``0.5 * SH_AMBIENT * r``
====================  ================================================================================

``Z0 = focal * box_cm * (1 + 2 * margin) / S``: the depth at which the mean face's landmark box
(``box_cm``, its longer side) fills a crop cut with ``margin`` on each side, as
:func:`facerig.landmarks.square_crop` cuts them (margin 0.25 by default). The head's weights and
bias start at zero, so an untrained encoder answers the mean face, frontal, centred in the crop
and sized as such a crop shows a face, under unit ambient light.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from facerig.assets import asset_path
from facerig.encoder.networks import ARCHITECTURES, fuse_conv_bn, make_backbone
from facerig.face.decoder import SH_AMBIENT
from facerig.io import atomic_open
from facerig.model import GraphicCode, load_model
from facerig.model.code import model_to_opencv
from facerig.render.transforms import axis_angle_to_matrix

__all__ = ["FaceEncoder", "load_encoder", "DEFAULT_ENCODER"]

DEFAULT_ENCODER = "default_encoder.pt"
"""File name of the shipped encoder in ``assets/`` (:func:`facerig.assets.asset_path`)."""

_FORMAT = "facerig-encoder-1"


class FaceEncoder(nn.Module):
    """A CNN regressing the graphic code of the face in a square crop.

    Args:
        arch: ``"mobile"`` (inverted residuals, default) or ``"resnet"`` (basic blocks).
        input_size: crop side S in pixels (a multiple of 32, e.g. 128 or 224).
        model: the face model name (or a :class:`~facerig.model.FaceModel`); only its name, part
            sizes and prior statistics are stored (the decoder is not part of the encoder).
        margin: the crop margin the translation prior assumes (see the module docstring).
        backbone: keyword arguments of the backbone (``width``/``last`` or ``widths``/``depths``).
        seed: seed of the backbone's random initial weights (None: torch's global random state);
            the global random state is left untouched when a seed is given.

    ``forward(images (B, S, S, 3) float in [0, 1], focal (B, 1) px, principal_point (B, 2) px)
    -> (B, D)`` code vectors in the crop camera (``D = K_id + K_exp + K_alb + 34``); the focal part
    equals the input focal. The backbone runs in bfloat16 autocast on CUDA when :attr:`amp` is True;
    the code is always float32.

    Inference path: in eval mode with autograd off (``torch.no_grad`` / ``torch.inference_mode``)
    the backbone runs as a cached copy with BatchNorm folded into the convolutions
    (:func:`facerig.encoder.networks.fuse_conv_bn`), channels-last; the copy is rebuilt whenever a
    weight or statistic changes (tensor version counters), so it never serves stale weights.
    Training and any call that needs gradients use the module itself.
    """

    def __init__(self, arch: str = "mobile", input_size: int = 128, model="default", margin: float = 0.25,
                 backbone: dict | None = None, seed: int | None = None):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"arch: expected one of {ARCHITECTURES}, got {arch!r}")
        if not isinstance(input_size, int) or input_size < 32 or input_size % 32:
            raise ValueError(f"input_size: expected a multiple of 32 (e.g. 128 or 224), got {input_size!r}")
        fm = model if not isinstance(model, str) else load_model(model)
        self.arch, self.input_size, self.margin = arch, int(input_size), float(margin)
        self.model_name = fm.name
        self.model_ref = model if isinstance(model, str) else fm.name
        self.backbone_kwargs = dict(backbone or {})
        self.sizes = GraphicCode.sizes_for(fm)
        self.n_out = self.sizes["identity"] + self.sizes["expression"] + self.sizes["albedo"] + 3 + 3 + 27
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.backbone = make_backbone(arch, **self.backbone_kwargs)
            self.head = nn.Linear(self.backbone.out_features, self.n_out)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        f32 = dict(dtype=torch.float32)
        self.register_buffer("id_std", fm.identity_std.detach().to(**f32).cpu().clone())
        self.register_buffer("exp_std", fm.expression_std.detach().to(**f32).cpu().clone())
        self.register_buffer("alb_std", fm.albedo_std.detach().to(**f32).cpu().clone())
        lm = fm.landmarks_mediapipe468
        idx = lm.indices if lm is not None else torch.arange(fm.n_vertices)
        pts = fm.mean.detach().to(**f32).cpu()[idx]
        lo, hi = pts.min(0).values, pts.max(0).values
        anchor = torch.stack([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, pts[:, 2].mean()])
        self.register_buffer("anchor", anchor)
        self.box_cm = float((hi - lo)[:2].max())
        self.register_buffer("pixel_mean", torch.tensor([0.5, 0.45, 0.4]))
        self.register_buffer("pixel_std", torch.tensor([0.25, 0.25, 0.25]))
        self.amp = True
        self._fused = None  # (key, fused backbone) - see _inference_backbone

    def _inference_backbone(self) -> nn.Module:
        """The BatchNorm-folded, channels-last copy of the backbone (rebuilt when a weight or
        statistic changed in place - tensor version counters - or the module was moved/cast)."""
        cached = self._fused
        if cached is not None and all(t._version == v for t, v in zip(cached[0], cached[1])):
            return cached[2]

        tensors = list(self.backbone.parameters()) + list(self.backbone.buffers())
        with torch.no_grad():
            fused = fuse_conv_bn(self.backbone).to(memory_format=torch.channels_last)
        # a plain attribute, not a registered submodule: no state_dict entry, not trained
        object.__setattr__(self, "_fused", (tensors, [t._version for t in tensors], fused))
        return fused

    def _apply(self, fn, *args, **kwargs):
        object.__setattr__(self, "_fused", None)  # .to() / .half() / .cuda(): rebuild the inference copy
        return super()._apply(fn, *args, **kwargs)
    # ------------------------------------------------------------------ configuration
    @property
    def config(self) -> dict:
        """Constructor arguments (what :meth:`save` stores beside the weights)."""
        return {"arch": self.arch, "input_size": self.input_size, "model": self.model_ref, "margin": self.margin,
                "backbone": self.backbone_kwargs}

    @property
    def code_size(self) -> int:
        """D, the length of the code vector."""
        return sum(int(v) for v in self.sizes.values())

    def base_depth(self, focal: Tensor) -> Tensor:
        """(B, 1) depth ``Z0`` (cm) at which the mean face fills a crop of this encoder's margin."""
        return focal * (self.box_cm * (1.0 + 2.0 * self.margin) / self.input_size)

    # ------------------------------------------------------------------ forward
    def features(self, images: Tensor) -> Tensor:
        """(B, S, S, 3) images in [0, 1] -> (B, C) backbone features (float32)."""
        x = images.permute(0, 3, 1, 2)
        x = (x - self.pixel_mean.to(x)[:, None, None]) / self.pixel_std.to(x)[:, None, None]
        x = x.contiguous(memory_format=torch.channels_last)
        net = self.backbone
        if not self.training and not torch.is_grad_enabled():
            net = self._inference_backbone()
        if self.amp and x.is_cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return net(x).float()
        return net(x)

    def decode_raw(self, raw: Tensor, focal: Tensor, principal_point: Tensor) -> Tensor:
        """Raw head outputs (B, D - 1) -> code vectors (B, D) (the parametrisation; differentiable)."""
        B = raw.shape[0]
        k_id, k_exp, k_alb = self.sizes["identity"], self.sizes["expression"], self.sizes["albedo"]
        i = 0
        ident = raw[:, i:i + k_id] * self.id_std
        i += k_id
        expr = raw[:, i:i + k_exp] * self.exp_std
        i += k_exp
        alb = raw[:, i:i + k_alb] * self.alb_std
        i += k_alb
        rot = raw[:, i:i + 3] * 0.5
        i += 3
        tr = raw[:, i:i + 3]
        i += 3
        sh = raw[:, i:i + 27] * (0.5 * SH_AMBIENT)
        sh = sh + torch.zeros_like(sh).index_fill(1, torch.arange(3, device=sh.device), SH_AMBIENT)
        f = focal.reshape(B, 1).to(raw)
        pp = principal_point.reshape(B, 2).to(raw)
        S = float(self.input_size)
        z = self.base_depth(f) * torch.exp(0.25 * tr[:, 2:3])
        uv = S / 2.0 + tr[:, :2] * (S / 4.0)
        P = torch.cat([(uv - pp) * z / f, z], 1)  # camera-frame position of the anchor
        R = axis_angle_to_matrix(rot) @ model_to_opencv(raw.dtype, raw.device)
        t = P - R @ self.anchor.to(raw)
        return torch.cat([ident, expr, alb, rot, t, f, sh], 1)

    def forward(self, images: Tensor, focal: Tensor, principal_point: Tensor) -> Tensor:
        """Code vectors (B, D) of crops ``images`` (B, S, S, 3) seen by cameras ``focal`` (B, 1) px and
        ``principal_point`` (B, 2) px (crop pixels)."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images: expected (B, S, S, 3) channels-last in [0, 1], got {tuple(images.shape)}")
        if tuple(images.shape[1:3]) != (self.input_size, self.input_size):
            raise ValueError(f"images: this encoder takes {self.input_size}x{self.input_size} crops, got "
                             f"{tuple(images.shape[1:3])}; resize the crops or build the encoder with that input_size")
        feats = self.features(images.float())
        raw = self.head(feats)
        return self.decode_raw(raw.float(), focal.float(), principal_point.float())

    def encode(self, images: Tensor, focal: Tensor, principal_point: Tensor) -> GraphicCode:
        """:meth:`forward` as a :class:`~facerig.model.GraphicCode`."""
        return GraphicCode.from_vector(self(images, focal, principal_point), self.sizes)

    # ------------------------------------------------------------------ files
    def save(self, path, half: bool = False, extra: dict | None = None) -> Path:
        """Write ``{"format", "config", "state_dict", "extra"}`` atomically to ``path``.

        ``half=True`` stores floating weights as float16 (half the size; loaded back as float32).
        """
        sd = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
              for k, v in self.state_dict().items()}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as fh:
            torch.save({"format": _FORMAT, "config": self.config, "state_dict": sd, "extra": extra or {}}, fh)
        return path

    @classmethod
    def from_file(cls, path, device=None) -> "FaceEncoder":
        """Load an encoder written by :meth:`save` (or a training checkpoint of :mod:`facerig.encoder.training`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path: encoder file {path} does not exist")
        blob = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(blob, dict) and blob.get("format") != _FORMAT and "model" in blob:  # a training checkpoint
            cfg = (blob.get("extra") or {}).get("encoder_config")
            if cfg is None and (path.parent / "config.json").is_file():
                cfg = json.loads((path.parent / "config.json").read_text()).get("encoder")
            if cfg is not None:
                blob = {"format": _FORMAT, "config": cfg, "state_dict": blob["model"]}
        if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
            raise ValueError(f"path: {path} is not a facerig encoder file (FaceEncoder.save writes them)")
        enc = cls(**blob["config"])
        sd = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
        enc.load_state_dict(sd)
        enc.eval()
        if device is not None:
            enc.to(device)
        return enc


def load_encoder(name_or_path="default", device=None) -> FaceEncoder:
    """The shipped encoder (``"default"``: ``assets/default_encoder.pt``) or an encoder file /
    training run folder (its ``encoder.pt``, else its ``checkpoint.pt``), in eval mode on ``device``.

    Raises:
        FileNotFoundError: the file does not exist (the message says how to train one).
    """
    if str(name_or_path) == "default":
        path = asset_path(DEFAULT_ENCODER, missing_hint="train it with `python tools/train_default_encoder.py`")
    else:
        path = Path(name_or_path)
        if path.is_dir():
            for cand in ("encoder.pt", "checkpoint.pt"):
                if (path / cand).is_file():
                    path = path / cand
                    break
    return FaceEncoder.from_file(path, device=device)
