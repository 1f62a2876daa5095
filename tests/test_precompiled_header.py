"""The precompiled header: g++ really uses it for our modules, and it never gets in the way."""

import os
import shutil
import subprocess

import pytensor
import pytensor.link.c.cmodule as cmodule
import pytensor.tensor as pt
import pytest
from pytensor.graph.fg import FunctionGraph
from pytensor.link.c.basic import CLinker

from untapped import backend
from untapped.fast import precompiled_header
from untapped.fast import rows as fast_rows


def _record_compiler_commands(monkeypatch):
    commands = []
    run = cmodule.output_subprocess_Popen

    def recording(command, *args, **kwargs):
        commands.append(list(command))
        return run(command, *args, **kwargs)

    monkeypatch.setattr(cmodule, "output_subprocess_Popen", recording)
    return commands


def _headers_read(command):
    """g++'s -H report for ``command`` (a module's compile), with invalid-header warnings on."""
    checked = [a for a in command if a != "-shared" and not a.startswith("-l")]
    out = checked.index("-o")
    del checked[out : out + 2]
    result = subprocess.run(
        checked[:1] + ["-H", "-Winvalid-pch", "-fsyntax-only"] + checked[1:], capture_output=True, text=True, check=True
    )
    return result.stderr.splitlines()


@pytest.mark.parametrize(
    "variant, output", [("elementwise", lambda x: pt.tanh(x) * 3), ("row_op", lambda x: fast_rows.MatrixSum(1)(x))]
)
def test_a_module_compiled_under_compiling_reads_the_precompiled_header(monkeypatch, tmp_path, variant, output):
    """PyTensor's modules and our OpenMP row ops each read their own precompiled version of the header."""
    commands = _record_compiler_commands(monkeypatch)
    x = pt.matrix("x", dtype="float32")
    with backend.compiling():
        # compile_cmodule compiles into tmp_path, past PyTensor's module cache,
        # with the arguments PyTensor gives every module of this op.
        CLinker().accept(FunctionGraph([x], [output(x)])).compile_cmodule(str(tmp_path))
        header = next(a for a in pytensor.config.gcc__cxxflags.split() if a.startswith("-include"))[len("-include") :]
    (command,) = [c for c in commands if str(tmp_path / "mod.cpp") in c]
    report = _headers_read(command)
    assert f"! {header}.gch/{variant}.gch" in report


def test_the_header_is_built_once_and_rebuilt_after_its_folder_is_cleared(tmp_path):
    flags = precompiled_header.compiler_flags(cache_root=str(tmp_path))
    (folder,) = [p for p in tmp_path.iterdir()]
    assert flags.startswith(f"-include{folder / precompiled_header.HEADER} ")
    assert sorted(p.name for p in folder.iterdir()) == [precompiled_header.HEADER, precompiled_header.HEADER + ".gch"]
    variants = folder / (precompiled_header.HEADER + ".gch")
    assert sorted(p.name for p in variants.iterdir()) == ["elementwise.gch", "row_op.gch"]
    built = (variants / "elementwise.gch").stat().st_mtime_ns

    assert precompiled_header.compiler_flags(cache_root=str(tmp_path)) == flags
    assert (variants / "elementwise.gch").stat().st_mtime_ns == built

    shutil.rmtree(folder)
    assert precompiled_header.compiler_flags(cache_root=str(tmp_path)) == flags
    assert (variants / "elementwise.gch").exists()


@pytest.mark.filterwarnings("ignore:`pytensor.config.cxx` is not an identifiable")
def test_a_compiler_that_cannot_build_it_gets_no_flags_and_leaves_nothing(tmp_path):
    with pytensor.config.change_flags(cxx=shutil.which("false")):
        assert precompiled_header.compiler_flags(cache_root=str(tmp_path)) == ""
    assert list(tmp_path.iterdir()) == []


def test_no_header_under_a_path_with_a_space(tmp_path):
    # PyTensor splits gcc__cxxflags on spaces, so such a path cannot be passed.
    root = tmp_path / "with space"
    assert precompiled_header.compiler_flags(cache_root=str(root)) == ""
    assert not root.exists()


def test_pytensors_own_compiler_checks_still_pass_under_compiling():
    # PyTensor checks compiler options by compiling a small file with the
    # user's flags (ours among them) but without its include folders; the
    # header must still be readable there.
    with backend.compiling():
        assert "-include" in pytensor.config.gcc__cxxflags
        assert cmodule.GCC_compiler.try_flags(["-O1"])


def test_the_flags_name_the_header_of_the_current_compile_directory():
    with backend.compiling():
        flags = pytensor.config.gcc__cxxflags
    assert f"-include{os.path.join(pytensor.config.compiledir, 'untapped-precompiled-header')}" in flags
    assert backend.environment()["cxxflags"] == backend._cxxflags()
    assert "-include" not in backend.environment()["cxxflags"]
