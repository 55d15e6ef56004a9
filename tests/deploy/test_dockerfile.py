"""docker/Dockerfile: a CUDA 13 base (or, for the CPU variant, CPU torch without DALI), the
same torch as the Makefile pins, every package of the distribution copied in, a non-root
user. These read the file; test_compose_up.py builds and runs the CPU image."""

from __future__ import annotations

import re

from tests.deploy.compose import REPO

DOCKERFILE = (REPO / "docker/Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.+)$", DOCKERFILE, flags=re.MULTILINE)


def arg_default(name: str) -> str:
    return next(v.split("=", 1)[1] for v in instructions("ARG") if v.startswith(name + "="))


def test_cuda13_base_and_dali_for_it():
    assert re.match(r"nvidia/cuda:13\.\d+\.\d+-", arg_default("BASE_IMAGE"))
    assert "nvidia-dali-cuda130==" in DOCKERFILE


def test_torch_pin_matches_the_makefile():
    makefile_pins = set(re.findall(r'"torch==([0-9.]+)[^"]*"', (REPO / "Makefile").read_text()))
    assert makefile_pins == {arg_default("TORCH_VERSION")}


def test_every_package_is_in_the_image():
    copied = {c.split()[0] for c in instructions("COPY")}
    assert {"preprocess", "pipeline", "trainer", "pyproject.toml"} <= copied


def test_runs_as_a_non_root_user_without_an_image_healthcheck():
    """The control service declares the healthcheck (test_compose.py); one in the image would be
    inherited by the services that serve nothing, and switching it off there breaks `up --wait`."""
    assert instructions("USER") and instructions("USER")[-1] not in ("root", "0")
    assert not instructions("HEALTHCHECK")


def test_cuda_and_cpu_builds_from_one_dockerfile():
    assert arg_default("TORCH_VARIANT") == "cuda"
    assert '"torch==${TORCH_VERSION}+cpu"' in DOCKERFILE and "download.pytorch.org/whl/cpu" in DOCKERFILE
    # DALI (and its CUDA libraries) only in the cuda build.
    cuda_branch = re.search(r"^\s*cuda\)(.*?);;", DOCKERFILE, flags=re.MULTILINE | re.DOTALL)[1]
    cpu_branch = re.search(r"^\s*cpu\)(.*?);;", DOCKERFILE, flags=re.MULTILINE | re.DOTALL)[1]
    assert "nvidia-dali" in cuda_branch and "nvidia" not in cpu_branch


def test_driver_capabilities_include_the_hardware_jpeg_decoder():
    env = " ".join(instructions("ENV"))
    caps = re.search(r"NVIDIA_DRIVER_CAPABILITIES=(\S+)", env)
    assert caps and {"compute", "utility", "video"} <= set(caps.group(1).split(","))
