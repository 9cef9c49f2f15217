"""facerig.io: files in and out, shared by the whole library (it imports nothing of facerig).

* :mod:`~facerig.io.files` - atomic writes: :func:`atomic_path`, :func:`atomic_open`,
  :func:`atomic_write`, :func:`write_image`. Every file facerig writes goes through them: the data
  is written to a temporary file in the destination folder and renamed over the destination, so a
  reader never sees a half-written file and an interrupted run never destroys an older result.
* :mod:`~facerig.io.image` - image decoding: :func:`load_image`, :func:`as_rgb_uint8` (every
  accepted image form -> ``(H, W, 3)`` uint8 RGB), :func:`resize_max_side`, :class:`ImageReadError`.
* :mod:`~facerig.io.networks` - trained network files: :func:`save_network`, :func:`read_network`, :func:`load_network`.
"""

from facerig.io.files import atomic_open, atomic_path, atomic_write, write_image
from facerig.io.image import ImageReadError, as_rgb_uint8, load_image, resize_max_side
from facerig.io.networks import load_network, read_network, save_network

__all__ = ["atomic_open", "atomic_path", "atomic_write", "write_image",
           "ImageReadError", "load_image", "as_rgb_uint8", "resize_max_side", "save_network", "read_network", "load_network"]
