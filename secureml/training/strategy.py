"""Device placement: every run trains through a `tf.distribute` strategy.

With one device this is TensorFlow's default strategy; with several GPUs (or when asked) it is
`MirroredStrategy`, so each defence inherits multi-device training. `cpu_devices` splits the CPU
into logical devices, which is how multi-device code is tested on a machine without GPUs.
"""
from dataclasses import dataclass
from typing import Annotated, Literal

import tensorflow as tf

from .. import schema
from ..errors import ConfigError


@dataclass
class RuntimeConfig:
    strategy: Literal["auto", "default", "mirrored"] = "auto"
    # Logical CPU devices are for testing multi-device code; each one costs threads and memory.
    cpu_devices: Annotated[int, schema.Range(1, 64)] | None = None
    mixed_precision: bool = False
    xla: bool = False
    deterministic: bool = True


def configure_runtime(config: RuntimeConfig) -> None:
    """Apply process-wide settings; must run before TensorFlow first touches a device."""
    if config.cpu_devices and config.cpu_devices > 1:
        cpus = tf.config.list_physical_devices("CPU")
        wanted = [tf.config.LogicalDeviceConfiguration()] * config.cpu_devices
        current = tf.config.get_logical_device_configuration(cpus[0])
        if current is None or len(current) != config.cpu_devices:
            try:
                tf.config.set_logical_device_configuration(cpus[0], wanted)
            except RuntimeError:
                raise ConfigError(
                    f"runtime.cpu_devices={config.cpu_devices} must be set before TensorFlow "
                    "starts; it was already initialized in this process. Set it in the run "
                    "config or start a new Python process.") from None
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.keras.mixed_precision.set_global_policy(
        "mixed_float16" if config.mixed_precision else "float32")


def make_strategy(config: RuntimeConfig) -> tf.distribute.Strategy:
    gpus = tf.config.list_logical_devices("GPU")
    if config.strategy == "default" or (config.strategy == "auto" and len(gpus) < 2
                                         and not (config.cpu_devices or 0) > 1):
        return tf.distribute.get_strategy()
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    if len(devices) < 2 and config.strategy == "mirrored":
        raise ConfigError("runtime.strategy 'mirrored' needs at least 2 devices, but TensorFlow "
                          f"sees {devices}. On a CPU-only machine set runtime.cpu_devices: 2.")
    if not gpus:
        # NCCL is GPU-only; on logical CPUs the reduction goes through one device.
        return tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    return tf.distribute.MirroredStrategy(devices)
