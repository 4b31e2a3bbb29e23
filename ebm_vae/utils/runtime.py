"""Device selection, CPU speed settings and seeding (explicit calls; importing ebm_vae changes nothing).

`configure_runtime(device)` is what the training tools call: it selects the device and, on CPU,
applies `configure_cpu()`. Measured effects on a 2-core AMD EPYC box are in bench/README.md.
"""
from __future__ import annotations

import os
from typing import Optional

import paddle

from ebm_vae.errors import UserError
from ebm_vae.utils.typed_yaml import MAX_SEED


class DeviceError(UserError, RuntimeError):
    """The requested device cannot be used."""


class SeedError(UserError, ValueError):
    """A seed out of the range Paddle takes."""


class ThreadsError(UserError, ValueError):
    """A bad number of math threads (--threads, $EBM_VAE_THREADS)."""

# Intel MKL (which Paddle's CPU wheels use for every matrix product, convolutions included) takes
# a slow generic code path on non-Intel CPUs; this MKL switch selects its AVX2 path instead.
MKL_CPU_SWITCH = "MKL_DEBUG_CPU_TYPE"
MKL_AVX2 = "5"
_configured_threads: Optional[int] = None  # what configure_cpu last applied (Paddle has no getter)


def set_device(device: str) -> None:
    """Use 'cpu' or 'gpu'; a clear error if a GPU is asked for but Paddle has none."""
    if device not in ("cpu", "gpu"):
        raise DeviceError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if device == "gpu" and not (paddle.is_compiled_with_cuda()
                                and paddle.device.cuda.device_count() > 0):
        raise DeviceError("device 'gpu' requested, but this Paddle has no usable GPU "
                           "(install paddlepaddle-gpu, or use --device cpu)")
    paddle.set_device(device)


def cpu_vendor() -> str:
    """The CPU vendor string from /proc/cpuinfo ('AuthenticAMD', 'GenuineIntel', ...), or ''."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads() -> int:
    """Math-library threads: $EBM_VAE_THREADS if set, else every core this process may use.

    A fixed number, not one read off the machine's load, so seeded runs repeat exactly. On a
    busy machine fewer threads are faster (bench/README.md): set --threads or EBM_VAE_THREADS."""
    env = os.environ.get("EBM_VAE_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ThreadsError(f"EBM_VAE_THREADS must be a whole number >= 1, got {env!r}")
        return int(env)
    return available_cores()


def configure_cpu(threads: Optional[int] = None) -> dict[str, object]:
    """Apply the CPU settings that measurably speed up Langevin revision and training.

    - On AMD CPUs, select MKL's AVX2 kernels (3-4x faster matrix products and convolutions).
      MKL reads the switch once, at its first product: call this before any Paddle computation.
      A value the user already exported is kept.
    - `threads` math-library threads (default: `default_threads()`; Paddle itself uses 1).
    - Paddle's eager convolutions do not use oneDNN whatever its flags say (docs/speed.md);
      the oneDNN path is the compiled input gradient of `langevin.gradient`.

    Returns the settings applied, for logs.
    """
    if threads is not None and threads < 1:
        raise ThreadsError(f"--threads must be a whole number >= 1, got {threads}")
    if cpu_vendor() == "AuthenticAMD":
        os.environ.setdefault(MKL_CPU_SWITCH, MKL_AVX2)
    global _configured_threads
    n = threads or default_threads()
    paddle.base.core.set_num_threads(n)
    _configured_threads = n
    return {"threads": n, MKL_CPU_SWITCH: os.environ.get(MKL_CPU_SWITCH)}


def math_threads() -> int:
    """The math-library threads `configure_cpu` applied, else `default_threads()`."""
    return _configured_threads or default_threads()


def configure_runtime(device: str, threads: Optional[int] = None) -> None:
    """Select `device` and, on CPU, apply `configure_cpu(threads)`."""
    set_device(device)
    if device == "cpu":
        configure_cpu(threads)


def check_seed(seed: int) -> None:
    """A seed out of [0, MAX_SEED] (e.g. a --seed flag) is a one-line SeedError."""
    if not 0 <= seed <= MAX_SEED:
        raise SeedError(f"a seed must be in [0, 2^63 - 1], got {seed}")


def seed_all(seed: int) -> None:
    """Seed Paddle's generators (model init, z, Langevin noise, reparameterisation), after
    `check_seed`."""
    check_seed(seed)
    paddle.seed(seed)
