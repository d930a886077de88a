"""`--precision auto` (the default): int8 where the CPU has int8 dot products and the backbone stays frozen, fp32
elsewhere; each CPU answer is faked here, and the run records what was chosen."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import pytest

from conftest import invoke
from vistrain.features import cpu
from vistrain.model.predictor import Predictor

X86_VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\nprocessor\t: 1\nflags\t\t: fpu sse2\n"
X86_AVX_VNNI = "flags\t\t: fpu sse2 avx2 avx_vnni\n"
X86_AMX = "flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n"
X86_AVX2 = "flags\t\t: fpu sse2 avx2 fma vnmi\n"  # `vnmi` (virtual NMI) is not VNNI
ARM_DOTPROD = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\n"
ARM_I8MM = "Features\t: fp asimd sve i8mm\n"
ARM_PLAIN = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


@pytest.mark.parametrize("cpuinfo, found", [
    (X86_VNNI, ("avx512_vnni",)), (X86_AVX_VNNI, ("avx_vnni",)), (X86_AMX, ("amx_int8",)), (X86_AVX2, ()),
    (ARM_DOTPROD, ("asimddp",)), (ARM_I8MM, ("i8mm",)), (ARM_PLAIN, ()), ("", ()),
])
def test_linux_int8_dot_products_are_read_from_proc_cpuinfo(cpuinfo: str, found: tuple, tmp_path: Path):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    assert cpu.linux_int8_dot_products(tmp_path / "cpuinfo") == found
    assert cpu.linux_int8_dot_products(tmp_path / "missing") == ()


@pytest.mark.parametrize("answers, found", [
    ({"hw.optional.arm.FEAT_DotProd": 1, "hw.optional.arm.FEAT_I8MM": 1}, ("dotprod", "i8mm")),
    ({"hw.optional.arm.FEAT_DotProd": 0}, ()),
    ({}, ()),  # an Intel Mac: no such sysctl
])
def test_macos_int8_dot_products_are_read_from_sysctl(answers: dict, found: tuple, monkeypatch):
    monkeypatch.setattr(cpu.sys, "platform", "darwin")
    monkeypatch.setattr(cpu, "_sysctl_int", answers.get)
    cpu.int8_dot_products.cache_clear()
    try:
        assert cpu.int8_dot_products() == found
    finally:
        cpu.int8_dot_products.cache_clear()


@pytest.mark.parametrize("present, found", [(True, ("dotprod",)), (False, ())])
def test_windows_int8_dot_products_are_asked_of_the_system(present: bool, found: tuple, monkeypatch):
    class Kernel32:
        @staticmethod
        def IsProcessorFeaturePresent(feature: int) -> bool:
            return present and feature == 43  # PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE

    monkeypatch.setattr(cpu.sys, "platform", "win32")
    monkeypatch.setattr(ctypes, "windll", type("WinDLL", (), {"kernel32": Kernel32}), raising=False)
    cpu.int8_dot_products.cache_clear()
    try:
        assert cpu.int8_dot_products() == found
    finally:
        cpu.int8_dot_products.cache_clear()


@pytest.mark.parametrize("dot, trains_backbone, expected", [
    (("avx512_vnni",), False, "int8"), (("asimddp",), False, "int8"), ((), False, "fp32"),
    (("avx512_vnni",), True, "fp32"),  # fine-tuning trains the backbone in fp32: auto gives way, never fails
])
def test_auto_resolves_by_the_cpu_and_by_what_is_trained(dot, trains_backbone, expected, monkeypatch):
    monkeypatch.delenv(cpu.ENVIRONMENT)
    monkeypatch.setattr(cpu, "int8_dot_products", lambda: dot)
    chosen, why = cpu.resolve_precision("auto", trains_backbone)
    assert chosen == expected and why.startswith("auto")
    assert cpu.resolve_precision("fp32")[0] == "fp32" and cpu.resolve_precision("int8")[0] == "int8"
    monkeypatch.setenv(cpu.ENVIRONMENT, "fp32")
    assert cpu.resolve_precision("auto")[0] == ("fp32")
    monkeypatch.setenv(cpu.ENVIRONMENT, "int4")
    with pytest.raises(ValueError, match="VISTRAIN_PRECISION is 'int4'"):
        cpu.resolve_precision("auto", trains_backbone=False)


@pytest.mark.slow
def test_train_defaults_to_int8_where_the_cpu_has_int8_dot_products(shapes_split: Path, tmp_path: Path,
                                                                    monkeypatch):
    monkeypatch.delenv(cpu.ENVIRONMENT)
    monkeypatch.setattr(cpu, "int8_dot_products", lambda: ("avx512_vnni",))
    result = invoke("train", shapes_split, "--out", tmp_path / "int8", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "precision: int8 (auto: this CPU has int8 dot products (avx512_vnni))" in result.stderr
    config = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert config["precision"] == config["training"]["precision"] == "int8" and config["calibration"]

    monkeypatch.setattr(cpu, "int8_dot_products", lambda: ())  # predicted on a machine without them: the run's own
    assert Predictor.from_run(tmp_path / "int8").precision.name == "int8"
    result = invoke("train", shapes_split, "--out", tmp_path / "fp32", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "precision:" not in result.stderr and "features: " in result.stderr
    assert json.loads((tmp_path / "fp32" / "config.json").read_text())["precision"] == "fp32"


@pytest.mark.slow
def test_auto_gives_fp32_when_fine_tuning(shapes_split: Path, tmp_path: Path, monkeypatch):
    monkeypatch.delenv(cpu.ENVIRONMENT)
    monkeypatch.setattr(cpu, "int8_dot_products", lambda: ("avx512_vnni",))
    result = invoke("train", shapes_split, "--out", tmp_path / "tuned", "--epochs", "1", "--fine-tune", "1",
                    "--fine-tune-epochs", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["precision"] == "fp32"
