"""``facerig model``: inspect and export face models.

    facerig model info default
    facerig model info path/to/FaceXModel --json
    facerig model export default rig.glb              # neutral + 53 named morph targets
    facerig model export default face.ply             # the mean face with albedo colours
    facerig model export default out/                 # a folder of OBJ blendshapes
    facerig model export default rig.glb --blendshapes bs/   # both
"""

from __future__ import annotations

import json
import textwrap


def register(subparsers) -> None:
    p = subparsers.add_parser("model", help="inspect and export face models",
                              description="Inspect and export face models (default, ICT-FaceKit, BFM, FLAME, .npz).")
    sub = p.add_subparsers(dest="model_command", metavar="ACTION")
    pi = sub.add_parser("info", help="counts, units, landmark maps, regions, licence")
    pi.add_argument("model", help="'default', an ICT-FaceKit folder, BFM .mat/.h5, FLAME .pkl or facerig .npz")
    pi.add_argument("--json", action="store_true", help="print the summary as JSON")
    pi.add_argument("--region", default=None, help="ICT-FaceKit only: face (default), narrow_face or head")
    pi.set_defaults(func=_info)
    pe = sub.add_parser("export", help="write the model as a .glb rig, an .obj/.ply mesh or OBJ blendshapes")
    pe.add_argument("model", help="'default' or a model path (see 'info')")
    pe.add_argument("out", help="OUT.glb (rig with morph targets), OUT.obj / OUT.ply (mean mesh with albedo "
                                "colours), or a folder name without extension (OBJ blendshapes)")
    pe.add_argument("--blendshapes", metavar="DIR", default=None,
                    help="also write a folder of OBJ blendshapes (neutral.obj + <name>.obj) to DIR")
    pe.add_argument("--region", default=None, help="ICT-FaceKit only: face (default), narrow_face or head")
    pe.set_defaults(func=_export)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _load(args):
    from facerig.cli import UserError
    from facerig.model import ModelFileError, load_model
    opts = {"region": args.region} if args.region else {}
    try:
        return load_model(args.model, **opts)
    except (ModelFileError, TypeError) as err:
        raise UserError(str(err)) from None


def _info(args) -> int:
    model = _load(args)
    s = model.summary()
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"model:        {s['name']}")
    print(f"source:       {s['source']}")
    print(f"unit:         {s['unit']} (model frame: x subject's left, y up, z toward the viewer)")
    print(f"vertices:     {s['vertices']}")
    print(f"triangles:    {s['faces']}")
    print(f"uvs:          {s['uvs'] if s['uvs'] is not None else 'none'}")
    print(f"identity:     {s['identity_modes']} modes (std {_range(model.identity_std)})")
    print(f"expression:   {s['expression_modes']} modes (std {_range(model.expression_std)})")
    names = ", ".join(s["expression_names"])
    print(textwrap.fill(names, width=100, initial_indent="              ", subsequent_indent="              ")
          if names else "")
    print(f"albedo:       {s['albedo_modes']} modes (std {_range(model.albedo_std)})")
    if s["joints"]:
        print(f"joints:       {', '.join(s['joints'])} (pose vector: {model.pose_dim} axis-angle numbers)")
    print("landmarks:    " + "; ".join(f"{k}: {v}" for k, v in s["landmark_maps"].items()))
    print("regions:      " + ", ".join(f"{k} {v} vertices" for k, v in s["regions"].items()))
    if s["face_groups"]:
        print("face groups:  " + ", ".join(f"{k} {v} triangles" for k, v in s["face_groups"].items()))
    lic = [ln for ln in s["license"].strip().splitlines() if ln.strip()]
    print("licence:      " + (lic[0] if lic else "unknown"))
    for line in lic[1:4]:
        print("              " + line)
    if len(lic) > 4:
        print(f"              ... ({len(lic) - 4} more lines; see NOTICE)")
    return 0


def _range(t) -> str:
    if t.numel() == 0:
        return "-"
    return f"{float(t.min()):.3g}..{float(t.max()):.3g}"


def _export(args) -> int:
    from pathlib import Path

    from facerig.cli import UserError
    from facerig.model import export_model_rig
    model = _load(args)
    out = Path(args.out)
    if out.suffix and out.suffix.lower() not in (".glb", ".obj", ".ply"):
        raise UserError(f"unsupported output {out.name!r}: use .glb, .obj, .ply or a folder name without extension")
    if args.blendshapes and Path(args.blendshapes).suffix:
        raise UserError(f"--blendshapes writes a folder; {args.blendshapes} has a file extension")
    try:
        path = export_model_rig(model, out)
        if args.blendshapes:
            export_model_rig(model, Path(args.blendshapes))
    except (ValueError, OSError) as err:
        raise UserError(str(err)) from None
    if out.suffix.lower() == ".glb":
        print(f"wrote {path}: {model.n_vertices} vertices, {model.n_faces} triangles, "
              f"{model.n_expression} morph targets, {path.stat().st_size / 1e6:.2f} MB")
    elif not out.suffix:
        print(f"wrote {path}/: neutral.obj + {model.n_expression} blendshape OBJs")
    else:
        print(f"wrote {path}: {model.n_vertices} vertices, {model.n_faces} triangles")
    if args.blendshapes:
        print(f"wrote {args.blendshapes}/: neutral.obj + {model.n_expression} blendshape OBJs")
    return 0
