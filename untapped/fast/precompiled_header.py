"""A precompiled header for the C modules PyTensor compiles.

Every C module PyTensor generates opens with the same ``#include`` lines:
Python's, NumPy's, PyTensor's helper and a few of the C++ library. Parsing
them takes a good part of the time g++ spends on a typical module, and a
cold compile of the untapped training step builds 75 modules. So we compile
those lines once, per compile directory and compiler flags, into a GCC
precompiled header (``.gch``), and hand it to every module with ``-include``.
That makes a cold compile shorter (``docs/speed.md``, *What makes it fast*, has the figures). There are
two versions of it, for PyTensor's flags and for the OpenMP flags of our row
ops (:mod:`untapped.fast`); g++ takes the first that suits a module.

The compiled code does not change. The modules include the same headers, in
the same order, under the same flags. GCC uses a precompiled header only when
the module's flags are compatible with the ones it was built with; otherwise
it reads the plain header it was made from. So a module with other flags, a
newer compiler or a compiler that is not GCC costs time, never correctness.
The header is built in a temporary folder and moved into place only after
g++ has been seen to accept it, so a half-written file is never used.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile

import pytensor
import pytensor.tensor as pt
from pytensor.graph.fg import FunctionGraph
from pytensor.link.c.basic import CLinker
from pytensor.link.c.cmodule import std_include_dirs

from untapped.fast.rows import MatrixSum

#: File name of the header, inside its folder; g++ looks for ``HEADER + ".gch"`` beside it.
HEADER = "modules.h"

# Folders whose header g++ accepted (True) or refused (False) in this
# process. A header once accepted is still looked for on every call, in case
# its folder was cleared (PyTensor's cache clean-up, say).
_checked = {}


def compiler_flags(cache_root=None):
    """The g++ flags that give a module the precompiled header; '' where it cannot be used.

    Call it under the ``gcc__cxxflags`` that the modules will be compiled
    with (the header must be built with the same flags). The header lives in
    ``cache_root`` (default: a folder in PyTensor's compile directory), in a
    sub-folder named by a digest of the compiler, its flags and the header's
    text. It is built there on first use, in about a second.

    The flags also name PyTensor's include folders. Then a test compile that
    PyTensor runs with the user's flags but without those folders (it checks
    compiler options that way) can still read the header.
    """
    if not pytensor.config.cxx:
        return ""
    root = cache_root or os.path.join(pytensor.config.compiledir, "untapped-precompiled-header")
    templates = _template_modules()
    folder = os.path.join(root, _digest(templates))
    include_dirs = templates[0]["include_dirs"]
    if any(c.isspace() for c in folder + "".join(include_dirs)):
        return ""  # PyTensor splits gcc__cxxflags on spaces
    header = os.path.join(folder, HEADER)
    usable = _checked.get(folder)
    if usable is False:
        return ""
    if not (usable and os.path.exists(header + ".gch")):
        usable = _checked[folder] = _build(folder, templates)
        if not usable:
            return ""
    return " ".join([f"-include{header}"] + [f"-I{d}" for d in include_dirs])


def _template_modules():
    """The source and g++ arguments of two typical modules: PyTensor's (a float32
    elementwise op) and ours (a row op of :mod:`untapped.fast`, built with OpenMP).

    Each gets its own precompiled header, in the folder ``HEADER + ".gch"``,
    from which g++ takes the first one that suits a module's flags.
    """
    x = pt.matrix("x", dtype="float32")
    templates = []
    for name, output in (("elementwise", pt.exp(x)), ("row_op", MatrixSum(0)(x))):
        linker = CLinker().accept(FunctionGraph([x], [output]))
        source = linker.get_src_code()
        templates.append(
            dict(
                name=name,
                source=source,
                includes=_leading_includes(source),
                args=linker.compile_args(),
                include_dirs=linker.header_dirs() + std_include_dirs(),
            )
        )
    return templates


def _leading_includes(source):
    """The ``#include`` lines a module begins with."""
    lines = []
    for line in source.splitlines():
        if not line.startswith("#include"):
            break
        lines.append(line)
    return "\n".join(lines) + "\n"


def _digest(templates):
    text = repr(
        [pytensor.config.cxx, pytensor.config.gcc_version_str]
        + [(t["name"], t["args"], t["include_dirs"], t["includes"]) for t in templates]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _command(template, *args):
    """g++ with the arguments PyTensor gives a module (cf. ``GCC_compiler.compile_str``), then ``args``."""
    return [
        pytensor.config.cxx, "-g", *template["args"], *(f"-I{d}" for d in template["include_dirs"]),
        "-fvisibility=hidden", *args,
    ]  # fmt: skip


def _build(folder, templates):
    """Build, check and move the header into ``folder``; whether it is there and usable.

    The header is PyTensor's modules' leading includes; it is usable when
    g++ takes the first template's precompiled version of it for that
    template's module. A later template's version is kept only if g++
    takes it for its own module.
    """
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    work = tempfile.mkdtemp(prefix=".building-", dir=os.path.dirname(folder))
    try:
        header = os.path.join(work, HEADER)
        with open(header, "w") as f:
            f.write(templates[0]["includes"])
        os.mkdir(header + ".gch")
        for i, template in enumerate(templates):
            module = os.path.join(work, "module.cpp")
            with open(module, "w") as f:
                f.write(template["source"])
            variant = os.path.join(header + ".gch", template["name"] + ".gch")
            built = _run(_command(template, "-x", "c++-header", header, "-o", variant))
            if not (built and _is_used(template, header, module, variant)):
                if i == 0:
                    return False
                if os.path.exists(variant):
                    os.remove(variant)
            os.remove(module)
        try:
            os.rename(work, folder)
        except OSError:
            pass  # another process got there first; its header is as good as ours
        return os.path.exists(os.path.join(folder, HEADER + ".gch"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _is_used(template, header, module, variant):
    """Whether g++ takes the precompiled ``variant`` of ``header`` for a module compiled with the template's flags."""
    result = _run(_command(template, f"-include{header}", "-H", "-fsyntax-only", module))
    return bool(result) and f"! {variant}" in result.stderr.splitlines()


def _run(command):
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result if result.returncode == 0 else None
