"""Measuring what training costs: device, peak memory, library versions."""
import os
import platform
import resource
import threading
import time
from importlib import metadata

import tensorflow as tf


def _rss_bytes() -> int | None:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


class PeakMemory:
    """Peak resident memory while the block runs, sampled every `interval` seconds.

    The process-wide maximum (ru_maxrss) cannot be reset between variants of one run, so a
    sampler thread tracks the peak of this block alone. On a GPU, TensorFlow's own peak
    allocation counter is read as well.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.start_bytes = self.peak_bytes = 0
        self.gpu_peak_bytes = None
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.wait(self.interval):
            rss = _rss_bytes()
            if rss is not None:
                self.peak_bytes = max(self.peak_bytes, rss)

    def __enter__(self):
        self.start_bytes = self.peak_bytes = _rss_bytes() or 0
        self._gpus = tf.config.list_logical_devices("GPU")
        for gpu in self._gpus:
            tf.config.experimental.reset_memory_stats(gpu.name)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        rss = _rss_bytes()
        if rss is not None:
            self.peak_bytes = max(self.peak_bytes, rss)
        if self._gpus:
            self.gpu_peak_bytes = sum(tf.config.experimental.get_memory_info(g.name)["peak"]
                                      for g in self._gpus)

    def summary(self) -> dict:
        if not self.peak_bytes:  # no /proc: fall back to the process-wide maximum
            return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "peak_rss_increase_mb": None, "gpu_peak_mb": None}
        return {
            "peak_rss_mb": round(self.peak_bytes / 2**20, 1),
            "peak_rss_increase_mb": round((self.peak_bytes - self.start_bytes) / 2**20, 1),
            "gpu_peak_mb": None if self.gpu_peak_bytes is None
            else round(self.gpu_peak_bytes / 2**20, 1),
        }


def device_info(strategy: tf.distribute.Strategy | None = None) -> dict:
    """What ran the computation: CPU model and cores, GPUs, replicas."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append(details.get("device_name", gpu.name))
    strategy = strategy or tf.distribute.get_strategy()
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpus": gpus,
        "replicas": strategy.num_replicas_in_sync,
        "strategy": type(strategy).__name__,
        "devices": [d.name for d in tf.config.list_logical_devices()
                    if d.device_type in ("CPU", "GPU")],
    }


LIBRARIES = ("secureml", "tensorflow", "keras", "tensorflow-privacy", "dp-accounting",
             "cleverhans", "tenseal", "numpy", "scikit-learn")


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
