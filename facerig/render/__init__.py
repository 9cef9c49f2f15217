"""facerig.render: a differentiable rasteriser and shader in pure PyTorch (CPU and CUDA).

Four composable primitives in the spirit of nvdiffrast, plus cameras, shading and a renderer:

* :func:`rasterize` - pixel-space triangles -> per-pixel face index, perspective-correct
  barycentrics (differentiable w.r.t. vertex positions) and depth, optionally K faces per pixel.
* :func:`interpolate` / :func:`sample_texture` - vertex attributes and UV textures at the pixels.
* :func:`antialias` - analytic silhouette antialiasing: gradients w.r.t. silhouette positions.
* :func:`soft_rasterize` / :func:`softmax_blend` - SoftRas-style probabilistic rasterisation.
* :mod:`~facerig.render.shading` - vertex normals, SH (9 x RGB) Lambertian light (per vertex or per pixel), Blinn-Phong.
* :func:`render_mesh` / :class:`Renderer` - camera-space mesh -> image, alpha, fragments.
* :mod:`~facerig.render.camera`, :mod:`~facerig.render.transforms` - OpenCV pinhole and
  orthographic cameras, rotations (axis-angle, 6-D, yaw/pitch/roll, quaternions), OpenGL and
  pytorch3d conversions.

Frames: camera = OpenCV (x right, y down, z forward); pixel (row i, col j) centre = (j+.5, i+.5);
rasteriser input = ``camera.project(verts_cam)`` = ``(u, v, view depth)``; images channels-last
(B, H, W, C); every function follows the device and dtype of its inputs.

Visibility gradients: which method and why
------------------------------------------
Hard rasterisation is piecewise constant in the vertex positions: inside a triangle the
barycentrics are differentiable (they are recomputed with autograd from the vertex positions for
the visible face, as nvdiffrast does), but moving a silhouette changes which face a pixel sees,
which has no derivative. Two remedies are offered:

* :func:`antialias` (default in :func:`render_mesh`): nvdiffrast's analytic antialiasing. Pixels
  on either side of a silhouette/occlusion edge are blended by the fraction of the pixel the
  edge cuts off, computed analytically from the edge's projected vertices. It is cheap (O(pixels),
  about the cost of one interpolation), keeps the image sharp, changes only the pixels along
  silhouettes and gives exact first-order coverage gradients - the right tool for photometric
  fitting and training, where the model starts within a few pixels of the target.
* :func:`soft_rasterize` + :func:`softmax_blend`: SoftRas / pytorch3d blending of the K nearest
  faces within a blur radius with ``sigmoid(-d^2 / sigma)`` coverage and a depth softmax with
  temperature ``gamma``. Gradients reach vertices from pixels up to the blur radius away (a wider
  basin of attraction for silhouette-only objectives that start far off), at K times the memory
  and time and with a blurred image.
"""

from .antialias import antialias
from .camera import (
    OrthographicCamera,
    PerspectiveCamera,
    opencv_to_opengl_view,
    opencv_to_pytorch3d,
)
from .interpolate import interpolate, sample_texture
from .mesh import face_adjacency, icosphere
from .raster import Fragments, rasterize
from .renderer import Renderer, RenderOutput, render_mesh
from .soft import SoftFragments, default_blur_radius, soft_rasterize, softmax_blend
from .shading import (
    blinn_phong,
    composite,
    face_normals,
    sh_basis,
    sh_irradiance,
    sh_shading,
    pixel_sh_shading,
    sh_basis_grad,
    vertex_normals,
)
from .transforms import (
    axis_angle_to_matrix,
    euler_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_to_matrix,
    rotation_6d_to_matrix,
    transform_points,
)

__all__ = [
    "Fragments", "rasterize", "interpolate", "sample_texture", "antialias",
    "PerspectiveCamera", "OrthographicCamera", "opencv_to_opengl_view", "opencv_to_pytorch3d",
    "icosphere", "face_adjacency",
    "render_mesh", "Renderer", "RenderOutput",
    "SoftFragments", "soft_rasterize", "softmax_blend", "default_blur_radius",
    "vertex_normals", "face_normals", "sh_basis", "sh_irradiance", "sh_shading", "pixel_sh_shading", "sh_basis_grad", "blinn_phong", "composite",
    "axis_angle_to_matrix", "matrix_to_axis_angle", "rotation_6d_to_matrix", "matrix_to_rotation_6d",
    "euler_to_matrix", "matrix_to_euler", "matrix_to_quaternion", "quaternion_to_matrix", "transform_points",
]
