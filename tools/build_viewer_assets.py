"""Vendor three.js into the viewer's package data (run at build time, never at run time).

Downloads the pinned ``three`` package from the npm registry with ``npm pack`` (npm checks the
tarball's integrity), and copies into ``facerig/view/static/vendor/``:

- ``three.module.min.js`` (the core, one ES module),
- ``addons/loaders/GLTFLoader.js`` and ``addons/controls/OrbitControls.js`` and every module they
  import by relative path (e.g. ``addons/utils/BufferGeometryUtils.js``),
- ``LICENSE-three.txt`` (MIT) and ``VERSION`` (the pinned version).

The page maps the bare specifier ``three`` to the core and ``three/addons/`` to ``addons/`` with an
import map, so the files are used unchanged. Credit: NOTICE ("three.js"). Usage::

    python tools/build_viewer_assets.py             # the pinned version
    python tools/build_viewer_assets.py --version 0.170.0
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

THREE_VERSION = "0.170.0"  # the last release whose build/ ships a single-file three.module.min.js
ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "facerig" / "view" / "static" / "vendor"
ADDONS = ("loaders/GLTFLoader.js", "controls/OrbitControls.js")
_IMPORT = re.compile(r"""(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"](\.{1,2}/[^'"]+)['"]""", re.S)


def _relative_imports(text: str) -> list[str]:
    return _IMPORT.findall(text)


def vendor(version: str = THREE_VERSION, dest: Path = VENDOR) -> list[Path]:
    """Fetch ``three@version`` with npm and copy the viewer's files into ``dest``; returns them."""
    if shutil.which("npm") is None:
        raise SystemExit("npm not found: install Node.js (Debian: apt-get install -y npm)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", f"three@{version}", "--silent"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        tgz = next(Path(tmp).glob("three-*.tgz"))
        with tarfile.open(tgz) as tar:
            try:
                tar.extractall(tmp, filter="data")  # refuses links and paths outside tmp
            except TypeError:  # Python < 3.11.4: no filters; npm's tarball was integrity-checked
                tar.extractall(tmp)
        pkg = Path(tmp) / "package"
        jsm = pkg / "examples" / "jsm"
        core = pkg / "build" / "three.module.min.js"
        if not core.is_file():
            raise SystemExit(f"three@{version} has no build/three.module.min.js (pin a version that does)")
        if dest.exists():
            shutil.rmtree(dest)
        (dest / "addons").mkdir(parents=True)
        written = [dest / "three.module.min.js"]
        shutil.copyfile(core, written[0])
        todo, seen = list(ADDONS), set()
        while todo:
            rel = todo.pop()
            if rel in seen:
                continue
            seen.add(rel)
            src = jsm / rel
            out = dest / "addons" / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
            written.append(out)
            for imp in _relative_imports(src.read_text(encoding="utf-8")):
                todo.append(_normalise(f"{Path(rel).parent.as_posix()}/{imp}"))
        shutil.copyfile(pkg / "LICENSE", dest / "LICENSE-three.txt")
        (dest / "VERSION").write_text(f"three {version}\n")
        written += [dest / "LICENSE-three.txt", dest / "VERSION"]
    return written


def _normalise(rel: str) -> str:
    parts: list[str] = []
    for p in rel.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if not parts:
                raise SystemExit(f"import leaves examples/jsm: {rel}")
            parts.pop()
        else:
            parts.append(p)
    return "/".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", default=THREE_VERSION, help=f"three.js version on npm (default {THREE_VERSION})")
    args = ap.parse_args()
    for path in vendor(args.version):
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
