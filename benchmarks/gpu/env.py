"""What the machine is and which optional imports work: the first section of the GPU check.

Every figure the check writes is only worth something next to the card, driver and library
versions it came from (docs/design.md: machines differ, ratios hold). Missing imports are
recorded with their error so the report says why a step was skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import shutil
import subprocess

# Imports the check can use; each one missing only skips the steps that need it.
OPTIONAL = ("torch", "torchvision", "nvidia.dali", "webdataset", "simplejpeg", "cv2", "PIL",
            "skimage", "sklearn", "preprocess.cli", "pipeline", "trainer.run.model", "trainer.run.optim", "pytest")
# Only their data files are read (the demo corpus's photos): finding them is enough, and
# importing scikit-learn costs seconds.
FIND_ONLY = ("skimage", "sklearn")


def module_status(names=OPTIONAL) -> dict[str, str]:
    """name -> version (or "ok"), or "missing: <error>"."""
    out = {}
    for name in names:
        if name in FIND_ONLY:
            out[name] = "found" if importlib.util.find_spec(name) else "missing: not installed"
            continue
        try:
            mod = importlib.import_module(name)
            out[name] = str(getattr(mod, "__version__", "ok"))
        except Exception as exc:  # any import failure means the same: that step can't run
            out[name] = f"missing: {type(exc).__name__}: {exc}"[:200]
    return out


def available(status: dict[str, str], name: str) -> bool:
    return name in status and not status[name].startswith("missing")


def _nvidia_smi() -> dict:
    if not shutil.which("nvidia-smi"):
        return {}
    query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
    try:
        line = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        ).stdout.strip().splitlines()[0]
    except Exception:  # nvidia-smi present but broken: the torch fields still say enough
        return {}
    keys = ("gpu_name", "driver", "gpu_memory", "sm_clock_max", "power_limit")
    return dict(zip(keys, (v.strip() for v in line.split(","))))


def machine() -> dict:
    info = {
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    info.update(_nvidia_smi())
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu_name"] = props.name
            info["gpu_sms"] = props.multi_processor_count
            info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    except Exception as exc:
        info["torch"] = f"missing: {exc}"
    for key, name in (("torchvision", "torchvision"), ("dali", "nvidia.dali")):
        try:
            info[key] = importlib.import_module(name).__version__
        except Exception:
            info[key] = None
    return info
