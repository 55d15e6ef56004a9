"""A Docker engine for test_compose_up.py, and what its builds need where no image registry
is reachable: a Debian base made from Debian's packages (debootstrap + docker import, kept
under BASE_IMAGE so that a rerun on the same engine reuses it), a copy of the working tree
as the build context (with a CPU torch wheel in docker/wheels/ when pip can fetch one), and
the host's CA bundle for pip behind a TLS-re-signing proxy."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.deploy.compose import REPO

BASE_IMAGE = "alexnet-ci/debian:bookworm"
DEBIAN_MIRROR = os.environ.get("DEBOOTSTRAP_MIRROR", "http://deb.debian.org/debian")
IMAGE_PYTHON = "3.11"  # bookworm's python3, which the CPU image's venv runs


def docker(*args: str, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: exit {out.returncode}: {out.stderr.strip()[-2000:]}")
    return out


def require_engine() -> None:
    """Skip, saying why, where no Docker engine answers."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI (.ci/run installs docker.io and starts dockerd where it can)")
    out = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0 or not out.stdout.strip():
        reason = (out.stderr.strip().splitlines() or ["no answer"])[-1]
        pytest.skip(f"no Docker engine answers ({reason}); .ci/run starts dockerd where it can")


def ensure_base_image() -> str:
    """BASE_IMAGE: made once from Debian's packages (no registry needed), then reused."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip(f"no {BASE_IMAGE} and no way to make it (debootstrap, as root; .ci/run installs it)")
    with tempfile.TemporaryDirectory(prefix="alexnet-base-") as tmp:
        root = Path(tmp, "rootfs")
        out = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root), DEBIAN_MIRROR],
                             capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, f"debootstrap failed: {out.stdout[-2000:]}{out.stderr[-2000:]}"
        # What debian:bookworm-slim leaves out too: downloaded packages and package lists.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (root / junk).glob("*"):
                if f.is_file():
                    f.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        docker("import", "-", BASE_IMAGE, stdin=tar.stdout, timeout=600)
        assert tar.wait() == 0
    return BASE_IMAGE


def ca_bundle() -> str | None:
    """The CA bundle that pip trusts here (a proxy's CA included), for the builds' secret."""
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        if os.environ.get(name) and Path(os.environ[name]).is_file():
            return os.environ[name]
    paths = ssl.get_default_verify_paths()
    return next((p for p in (paths.cafile, paths.openssl_cafile) if p and Path(p).is_file()), None)


def build_context(dest: Path) -> Path:
    """The working tree's files (tracked, and untracked but not ignored) copied to `dest`,
    so that the build and the project's name never depend on this checkout's other files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    if listed.returncode != 0:  # not a git checkout (an unpacked archive): what the build reads
        shutil.copytree(REPO, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.egg-info", "demo", "runs", "shards", "*.whl"))
        return dest
    for rel in filter(None, listed.stdout.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def torch_version() -> str:
    dockerfile = (REPO / "docker/Dockerfile").read_text()
    return re.search(r"^ARG TORCH_VERSION=(\S+)$", dockerfile, flags=re.MULTILINE)[1]


def fetch_cpu_torch_wheel(wheels: Path) -> bool:
    """Put the CPU torch wheel for the image's Python in `wheels` as the Makefile finds one:
    pip's own configuration (a local wheel), else PyTorch's CPU index. False: neither has it,
    and the build tries PyTorch's index itself."""
    spec = f"torch=={torch_version()}+cpu"
    base = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--retries", "1",
            "--python-version", IMAGE_PYTHON, "--platform", "manylinux_2_28_x86_64", "-d", str(wheels), spec]
    for extra in ([], ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]):
        if subprocess.run([*base, *extra], capture_output=True, text=True, timeout=900).returncode == 0:
            return True
    return False


def project_leftovers(project: str) -> dict[str, list[str]]:
    """Containers, volumes and networks that Compose made for `project` and that still exist."""
    label = f"label=com.docker.compose.project={project}"
    return {kind: docker(*cmd, "--filter", label, "--format", field).stdout.split()
            for kind, cmd, field in (("containers", ("ps", "-a"), "{{.Names}}"), ("volumes", ("volume", "ls"), "{{.Name}}"),
                                     ("networks", ("network", "ls"), "{{.Name}}"))}


def image_size_mb(image: str) -> float:
    return int(docker("image", "inspect", image, "--format", "{{.Size}}").stdout) / 1e6
