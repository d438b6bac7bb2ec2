"""Transparent huge pages for XLA:CPU's per-step buffers: re-execute with glibc's hugetlb tunable.

XLA:CPU takes each step's temporary buffers from malloc (the quickstart's training step: one of
147 MB and one of 43 MB). glibc serves requests this large (above its 32 MB mmap ceiling, or from
a worker thread's arena) with a fresh `mmap` and unmaps them on `free`, so every step faults in
about 36,000 new 4 KiB pages: 0.13 s of kernel time per step on 2 cores. With the glibc tunable
`glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc asks for transparent huge pages on those maps
(`madvise`): ~170 faults per step, 0.224 -> 0.177 s per step (`benchmarks/train_step.py --config
quickstart --no-torch`).

glibc reads tunables only when a process starts, so the command-line entry points
(`hmr_jax.train` before jax or TensorFlow are imported, `hmr_jax.evaluate`, `hmr_jax.predict`,
`benchmarks/train_step.py`) call `ensure()` first thing: it replaces the process with the same
command (same PID, arguments and environment plus the tunable). Nothing happens when the
tunable cannot help or is already decided: not Linux with glibc >= 2.35, transparent huge pages
'never', `GLIBC_TUNABLES` already naming `glibc.malloc.hugetlb`, or `HMR_JAX_HUGEPAGES=0`.
"""

import os
import platform
import sys
from collections.abc import Mapping

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "HMR_JAX_HUGEPAGES"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = THP_SETTING) -> str | None:
    """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'), None if unknown."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(".")[:2])
    except ValueError:
        return ()


def reexec_environment(
    environ: Mapping[str, str], system: str, libc: tuple[str, str], thp: str | None
) -> dict[str, str] | None:
    """The environment to re-execute with, or None to carry on as is (see the module doc).

    Args:
      environ: the current environment.
      system: `platform.system()`.
      libc: `platform.libc_ver()`, e.g. ('glibc', '2.36').
      thp: `thp_mode()`.
    """
    if environ.get(OPT_OUT, "1") == "0" or TUNABLE in environ.get("GLIBC_TUNABLES", ""):
        return None
    if system != "Linux" or libc[0] != "glibc" or _version(libc[1]) < (2, 35) or thp in (None, "never"):
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    return {**environ, "GLIBC_TUNABLES": f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"}


def ensure() -> None:
    """Re-execute this process with the tunable when it helps (does not return then)."""
    env = reexec_environment(os.environ, platform.system(), platform.libc_ver(), thp_mode())
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
