"""A smaller PyNvVideoCodec wheel for the device check: a valid wheel without what tsf never loads.

    python -m benchmarks.strip_wheel pynvvideocodec-2.2.4-cp312-cp312-manylinux_2_28_x86_64.whl -o DIR

NVIDIA's wheel carries, beside the package, the FFmpeg source tarball it ships for the LGPL
(`*.data/`, 12 MB), each FFmpeg library under three names (`libavformat.so`, `.so.63` and
`.so.63.1.101`: identical files, of which the extension needs only the soname, `.so.63`), Jupyter
notebooks and sample scripts (`samples/`) and benchmark scripts (`benchmarks/`, a top-level
folder that would sit beside tsf's own `benchmarks` on the path). What is kept: the package, one
copy of each library (its soname), the CUDA runtime auditwheel grafted (`pynvvideocodec.`, which
the extension's RPATH names), and the dist-info with its licences and notices. RECORD is
rewritten with the kept files' hashes and sizes and top_level.txt with the kept packages, so pip
installs it like the original (measured sizes: benchmarks/README.md, "The device check").

For carrying to a test machine only: a copy given to others must keep the FFmpeg source.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path

# What tsf's device check keeps of each wheel it strips: its importable package and the folder of
# libraries auditwheel grafted into it (named in the extension's RPATH).
KEEP = {"pynvvideocodec": ("PyNvVideoCodec", "pynvvideocodec.")}
SONAME = re.compile(r"^lib[^/]+\.so\.\d+$")  # libavformat.so.63: what the dynamic linker looks up


def record_hash(data: bytes) -> str:
    """RECORD's hash field (PEP 376 / the wheel spec): sha256, urlsafe base64 without padding."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def kept_names(names: list[str], contents: dict[str, bytes], packages: tuple[str, ...]) -> list[str]:
    """The archive names a stripped wheel keeps (dist-info included, RECORD rewritten later)."""
    dist_info = next(name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info"))
    kept = [name for name in names
            if name.split("/")[0] in packages or (name.split("/")[0] == dist_info and not name.endswith("/RECORD"))]
    # Identical shared libraries under several names: keep the soname.
    by_content: dict[str, list[str]] = {}
    for name in kept:
        if ".so" in Path(name).name and Path(name).name.startswith("lib"):
            by_content.setdefault(hashlib.sha256(contents[name]).hexdigest(), []).append(name)
    for same in by_content.values():
        sonames = [name for name in same if SONAME.match(Path(name).name)]
        if len(same) > 1 and sonames:
            kept = [name for name in kept if name not in same or name == sonames[0]]
    return kept


def strip_wheel(source: Path, out_dir: Path) -> Path:
    """Writes the stripped copy of `source` into `out_dir` under the same file name; returns it."""
    distribution = source.name.split("-")[0].lower()
    if distribution not in KEEP:
        raise ValueError(f"no stripping rule for {source.name} (known: {', '.join(KEEP)})")
    packages = KEEP[distribution]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / source.name
    with zipfile.ZipFile(source) as wheel:
        infos = {info.filename: info for info in wheel.infolist() if not info.is_dir()}
        contents = {name: wheel.read(name) for name in infos}
    names = kept_names(list(infos), contents, packages)
    dist_info = next(name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info"))
    top_level = f"{dist_info}/top_level.txt"
    if top_level in contents:
        contents[top_level] = "".join(f"{p}\n" for p in packages if not p.endswith(".")).encode()
    record_name = f"{dist_info}/RECORD"
    record = "".join(f"{name},{record_hash(contents[name])},{len(contents[name])}\n" for name in names)
    record += f"{record_name},,\n"
    tmp = target.with_name(f".tmp-{target.name}")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as stripped:
        for name in names:
            stripped.writestr(infos[name], contents[name], compress_type=zipfile.ZIP_DEFLATED)
        stripped.writestr(zipfile.ZipInfo(record_name, date_time=infos[names[0]].date_time), record,
                          compress_type=zipfile.ZIP_DEFLATED)
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True, help="folder for the stripped wheel")
    args = parser.parse_args(argv)
    target = strip_wheel(args.wheel, args.out)
    print(f"{args.wheel.name}: {args.wheel.stat().st_size / 2**20:.1f} MiB -> {target.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
