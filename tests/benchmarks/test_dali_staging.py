"""The DALI wheels staged for the GPU host (../shared/tools/stage-dali-wheels -> .device/parts)
satisfy what DALI's wheel declares, so `import nvidia.dali` works there with no network.

Runs only where the parts exist (a session that stages for a lent GPU); CI has none.
"""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[2]
PARTS = sorted((ROOT / ".device" / "parts").glob("part-*"))
HOST_HAS = {"numpy"}  # the GPU host's own packages, left out by the tool on purpose

pytestmark = pytest.mark.skipif(not PARTS, reason="no staged DALI parts under .device/parts")


class _Concat(io.RawIOBase):
    """The parts read back to back as one stream (they are one tar cut in pieces)."""

    def __init__(self, paths):
        self._files = [open(p, "rb") for p in paths]

    def readable(self):
        return True

    def readinto(self, buf):
        while self._files:
            n = self._files[0].readinto(buf)
            if n:
                return n
            self._files.pop(0).close()
        return 0


def staged_wheels() -> dict[str, bytes | str]:
    """Wheel file name -> its METADATA text (the DALI and nvImageCodec wheels) or ''."""
    out = {}
    with tarfile.open(fileobj=io.BufferedReader(_Concat(PARTS), 1 << 20), mode="r|") as tar:
        for member in tar:
            name = Path(member.name).name
            if not name.endswith(".whl"):
                continue
            meta = ""
            if re.match(r"nvidia_(dali|nvimgcodec)", name):
                with zipfile.ZipFile(io.BytesIO(tar.extractfile(member).read())) as z:
                    meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
            out[name] = meta
    return out


def requirements(metadata: str, extra: str | None = None) -> list[Requirement]:
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in metadata.splitlines()
            if line.startswith("Requires-Dist:")]
    env = {"extra": extra or "", "python_version": "3.12", "sys_platform": "linux",
           "platform_machine": "x86_64", "platform_system": "Linux"}
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def test_staged_wheels_satisfy_dalis_declared_requirements():
    wheels = staged_wheels()
    versions = {}
    for name in wheels:
        dist, version, *_ = parse_wheel_filename(name)
        assert dist not in versions, f"two versions of {dist} staged: pip would refuse the set"
        versions[dist] = version
    dali = next(m for n, m in wheels.items() if n.startswith("nvidia_dali_cuda130-"))
    codec = next(m for n, m in wheels.items() if n.startswith("nvidia_nvimgcodec_cu13-"))
    needed = requirements(dali) + [r for r in requirements(codec, "all") if r.marker is not None]
    assert len(needed) >= 5, needed  # the metadata was read, not an empty list
    unmet = [str(r) for r in needed if canonicalize_name(r.name) not in HOST_HAS
             and not (canonicalize_name(r.name) in versions
                      and r.specifier.contains(versions[canonicalize_name(r.name)], prereleases=True))]
    assert not unmet, f"staged set misses or mismatches: {unmet}"
    # A placeholder wheel (0.0.0a0, ~1 kB) would satisfy a bare name but holds no library.
    assert versions[canonicalize_name("nvidia-nvjpeg")].release[0] >= 12
