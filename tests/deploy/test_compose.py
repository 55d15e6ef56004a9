"""docker-compose.yml (GPU) and docker-compose.cpu.yml over it (CPU): Debian's docker-compose
accepts both with no .env, and `up` starts the whole stack in each. Each project service's
command is parsed by the real parsers in test_compose_commands.py."""

from __future__ import annotations

import pytest

from tests.deploy.compose import CPU, GPU, REPO, VARIANTS, compose, resolved, started_services



@pytest.mark.parametrize("dotenv", ["none", ".env.example"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_config_is_accepted_with_no_env_file_or_the_example(variant, dotenv):
    text = "" if dotenv == "none" else (REPO / dotenv).read_text()
    out = compose("--profile", "preprocess", "config", "-q", files=VARIANTS[variant], dotenv=text)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr  # not even a warning about an unset variable


def test_up_starts_the_whole_stack_in_both_variants():
    gpu, cpu = resolved(files=GPU), resolved(files=CPU)
    assert started_services(gpu) == {"control", "trainer", "prometheus", "grafana"}
    assert started_services(cpu) == {"control", "trainer-cpu", "prometheus", "grafana"}
    # Nothing the CPU variant starts asks for a device (the host has no NVIDIA runtime).
    assert not [n for n in started_services(cpu) if "deploy" in cpu["services"][n]]
    for name in ("control", "prometheus", "grafana"):  # the same services (merging may reorder volumes)
        same = [{**v[name], "volumes": sorted(v[name].get("volumes", []))} for v in (gpu["services"], cpu["services"])]
        assert same[0] == same[1]


def test_cpu_variant_trains_the_demo_on_the_cpu():
    trainer = resolved(files=CPU)["services"]["trainer-cpu"]
    assert "--device cpu" in trainer["command"] and "--backend reference" in trainer["command"]
    assert "--resume auto" in trainer["command"] and "torchrun" not in trainer["command"]
    assert trainer["environment"]["DEMO_ONLY"] == "1" and trainer["environment"]["DEMO_DEVICE"] == "cpu"
    assert trainer["restart"] == "on-failure" and trainer["stop_signal"] == "SIGINT"
    assert {v.split(":")[1] for v in trainer["volumes"]} == {"/data/shards", "/data/runs"}


def test_services_and_their_wiring():
    services = resolved()["services"]
    assert set(services) == {"control", "trainer", "prometheus", "grafana", "preprocess"}
    trainer = services["trainer"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    caps = set(trainer["environment"]["NVIDIA_DRIVER_CAPABILITIES"].split(","))
    assert {"compute", "utility", "video"} <= caps  # video: the hardware JPEG decoder
    assert trainer["restart"] == "on-failure" and trainer["shm_size"]
    assert "--resume auto" in trainer["command"]
    assert services["preprocess"]["profiles"] == ["preprocess"]
    assert any(v.endswith(":/imagenet:ro") for v in services["preprocess"]["volumes"])
    assert "/healthz" in " ".join(services["control"]["healthcheck"]["test"])
    assert {"shards", "runs"} <= set(resolved()["volumes"])


def test_gpu_count_comes_from_the_environment():
    trainer = resolved({"GPUS": "4"})["services"]["trainer"]
    assert "--nproc-per-node 4" in trainer["command"]
    assert str(trainer["deploy"]["resources"]["reservations"]["devices"][0]["count"]) == "4"
