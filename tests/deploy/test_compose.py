"""docker-compose.yml (GPU) and docker-compose.cpu.yml over it (CPU): Compose v2 accepts both
with no .env, and `up` starts the whole stack in each, every port on loopback unless
BIND_ADDRESS says otherwise. Each project service's command is parsed by the real parsers in
test_compose_commands.py; the stack is started for real in test_compose_up.py."""

from __future__ import annotations

import pytest

from tests.deploy.compose import CPU, GPU, REPO, VARIANTS, command, compose, mounts, resolved, started_services

PROJECT_SERVICES = ("control", "trainer", "preprocess")  # built from docker/Dockerfile


@pytest.mark.parametrize("dotenv", ["none", ".env.example"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_config_is_accepted_with_no_env_file_or_the_example(variant, dotenv):
    text = "" if dotenv == "none" else (REPO / dotenv).read_text()
    out = compose("--profile", "preprocess", "config", "-q", files=VARIANTS[variant], dotenv=text)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr  # not even a warning about an unset variable


def test_up_starts_the_whole_stack_in_both_variants():
    gpu, cpu = resolved(files=GPU), resolved(files=CPU)
    assert started_services(gpu) == started_services(cpu) == {"control", "trainer", "prometheus", "grafana"}
    # Nothing the CPU variant starts asks for a device (the host has no NVIDIA runtime).
    assert not [n for n in started_services(cpu) if "deploy" in cpu["services"][n]]
    for name in ("prometheus", "grafana"):  # the same services
        assert gpu["services"][name] == cpu["services"][name]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_published_port_is_on_loopback_by_default(variant):
    """A stranger on the network reaches nothing: not the write API over plain HTTP, not
    Grafana's anonymous viewer, not Prometheus' API."""
    services = resolved(files=VARIANTS[variant])["services"]
    published = {(name, p["target"]): p.get("host_ip") for name, s in services.items() for p in s.get("ports", [])}
    assert set(published) == {("control", 8000), ("prometheus", 9090), ("grafana", 3000)}
    assert set(published.values()) == {"127.0.0.1"}, published


def test_bind_address_opens_every_port_to_the_network_on_request():
    services = resolved(dotenv="BIND_ADDRESS=0.0.0.0\nCONTROL_PORT=18000\n")["services"]
    ports = [p for s in services.values() for p in s.get("ports", [])]
    assert {p["host_ip"] for p in ports} == {"0.0.0.0"}
    assert ("18000", 8000) in {(p["published"], p["target"]) for p in ports}


def test_cpu_variant_builds_the_cpu_image_for_every_project_service():
    gpu, cpu = resolved(files=GPU)["services"], resolved(files=CPU)["services"]
    for name in PROJECT_SERVICES:
        assert cpu[name]["image"] == "alexnet-imagenet:cpu" != gpu[name]["image"]
        assert cpu[name]["build"]["args"]["TORCH_VARIANT"] == "cpu"
        assert "TORCH_VARIANT" not in gpu[name]["build"].get("args", {})  # the Dockerfile's default: cuda
        # The proxy CA secret reaches both builds, once.
        assert [s["source"] for s in cpu[name]["build"]["secrets"]] == ["ca_bundle"]


def test_cpu_variant_trains_the_demo_on_the_cpu():
    trainer = resolved(files=CPU)["services"]["trainer"]
    argv = command(trainer)
    assert argv[:2] == ["trainer", "train"]  # no torchrun
    assert "--device cpu" in " ".join(argv) and "--backend reference" in " ".join(argv)
    assert "--resume auto" in " ".join(argv)
    assert "deploy" not in trainer  # the GPU reservation is !reset
    assert trainer["environment"]["DEMO_ONLY"] == "1" and trainer["environment"]["DEMO_DEVICE"] == "cpu"
    assert trainer["restart"] == "on-failure" and trainer["stop_signal"] == "SIGINT"
    assert set(mounts(trainer)) == {"/data/shards", "/data/runs"}


def test_services_and_their_wiring():
    config = resolved()
    services = config["services"]
    assert set(services) == {"control", "trainer", "prometheus", "grafana", "preprocess"}
    trainer = services["trainer"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    caps = set(trainer["environment"]["NVIDIA_DRIVER_CAPABILITIES"].split(","))
    assert {"compute", "utility", "video"} <= caps  # video: the hardware JPEG decoder
    assert trainer["restart"] == "on-failure" and trainer["shm_size"]
    assert "--resume auto" in " ".join(command(trainer))
    assert services["preprocess"]["profiles"] == ["preprocess"]
    assert mounts(services["preprocess"])["/imagenet"]["read_only"]
    assert "/healthz" in " ".join(services["control"]["healthcheck"]["test"])
    assert {"shards", "runs"} <= set(config["volumes"])


def test_gpu_count_comes_from_the_environment():
    trainer = resolved({"GPUS": "4"})["services"]["trainer"]
    assert "--nproc-per-node 4" in " ".join(command(trainer))
    assert trainer["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 4  # a number, not "4"
