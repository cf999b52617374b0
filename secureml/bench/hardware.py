"""What a benchmark ran on: CPU, memory, GPUs, TensorFlow build, libraries, machine load."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time

import tensorflow as tf

from ..training.resources import device_info, library_versions


def hardware_record() -> dict:
    """CPU model and cores, memory, GPU names and memory, CUDA build, library versions, load."""
    device = device_info()
    build = tf.sysconfig.get_build_info()
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": device["cpu"],
        "cpu_count": device["cpu_count"],
        "memory_gb": _memory_gb(),
        "gpus": gpu_details(),
        "tensorflow_build": {"cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version"),
                             "is_cuda_build": bool(build.get("is_cuda_build"))},
        "libraries": library_versions(),
        "load_average": load_average(),
    }


def gpu_details() -> list[dict]:
    """Name, compute capability and total memory of every GPU TensorFlow sees.

    TensorFlow reports the name and compute capability but not the total memory, which comes
    from nvidia-smi when it is installed (null otherwise).
    """
    gpus = []
    totals = _nvidia_smi_memory_mb()
    for index, gpu in enumerate(tf.config.list_physical_devices("GPU")):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        gpus.append({"name": details.get("device_name", gpu.name),
                     "compute_capability": ".".join(map(str, capability)) if capability else None,
                     "memory_mb": totals[index] if index < len(totals) else None})
    return gpus


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine slows every timing."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _nvidia_smi_memory_mb() -> list[int]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
        return [int(line) for line in out.split() if line.strip().isdigit()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
