"""What this CPU offers int8 features, and the precision `--precision auto` resolves to.

int8 features pay where the CPU multiplies int8 vectors in one instruction, accumulating in 32 bits: x86's
AVX-512 VNNI, AVX-VNNI and AMX, ARM's dot products (`asimddp`) and int8 matrix multiplies (`i8mm`). There ONNX
Runtime's int8 kernels are exact and 2-3 times as fast as fp32 (docs/benchmarks.md); elsewhere they are exact only
with 32-bit accumulation, which is no faster than fp32. The instructions are read from what the operating system
reports (`/proc/cpuinfo` on Linux, `sysctl` on macOS, `IsProcessorFeaturePresent` on Windows on ARM), never guessed
from a CPU's name; where none of these answers (Windows on x86, Intel macOS), `auto` is fp32.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from functools import lru_cache
from pathlib import Path

from vistrain.features.precision import AUTO, PRECISIONS

LINUX_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")  # /proc/cpuinfo's names
MACOS_SYSCTLS = {"hw.optional.arm.FEAT_DotProd": "dotprod", "hw.optional.arm.FEAT_I8MM": "i8mm"}
WINDOWS_FEATURES = {43: "dotprod"}  # PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE
ENVIRONMENT = "VISTRAIN_PRECISION"  # what `auto` means on this machine, when set (fp32 or int8)


@lru_cache(maxsize=1)
def int8_dot_products() -> tuple[str, ...]:
    """The int8 dot-product instructions this CPU has, by the operating system's names (empty: none, or the
    system does not say)."""
    if sys.platform.startswith("linux"):
        return linux_int8_dot_products(Path("/proc/cpuinfo"))
    if sys.platform == "darwin":
        return tuple(name for key, name in MACOS_SYSCTLS.items() if _sysctl_int(key) == 1)
    if sys.platform == "win32":
        present = ctypes.windll.kernel32.IsProcessorFeaturePresent  # type: ignore[attr-defined]
        return tuple(name for feature, name in WINDOWS_FEATURES.items() if present(feature))
    return ()


def cpu_name() -> str:
    """The CPU's model name, as Linux reports it (else the platform's processor string), for benchmark tables."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def linux_int8_dot_products(cpuinfo: Path) -> tuple[str, ...]:
    """The int8 dot-product flags of the first processor in `cpuinfo` (x86 `flags`, ARM `Features`)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            return tuple(flag for flag in LINUX_FLAGS if flag in flags)
    return ()


def _sysctl_int(name: str) -> int | None:
    """A numeric sysctl on macOS (None when the system does not have it)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    value, size = ctypes.c_int64(0), ctypes.c_size_t(8)
    if libc.sysctlbyname(name.encode(), ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
        return None
    return value.value


def resolve_precision(requested: str, trains_backbone: bool = False) -> tuple[str, str]:
    """(the precision features are computed in, why) for `requested` ("auto", "fp32" or "int8"). `auto` is fp32
    for anything that trains the backbone (its features change as it learns: fp32 only), else $VISTRAIN_PRECISION
    if set, else int8 where the CPU has int8 dot products and fp32 elsewhere."""
    if requested not in (AUTO, *PRECISIONS):
        raise ValueError(f"unknown precision {requested!r}; precisions: {', '.join((AUTO, *PRECISIONS))}")
    if requested != AUTO:
        return requested, "asked for"
    if trains_backbone:
        return "fp32", "auto: the backbone is trained, in fp32"
    chosen = os.environ.get(ENVIRONMENT, AUTO)
    if chosen in PRECISIONS:
        return chosen, f"auto: ${ENVIRONMENT}"
    if chosen != AUTO:
        raise ValueError(f"${ENVIRONMENT} is {chosen!r}, not one of {', '.join((AUTO, *PRECISIONS))}")
    found = int8_dot_products()
    if found:
        return "int8", f"auto: this CPU has int8 dot products ({', '.join(found)})"
    return "fp32", "auto: this CPU has no int8 dot products"
