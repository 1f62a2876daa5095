"""The repository speaks of the project only: no machine's paths, no "this VM", no issue numbers.

Greps the README, ``docs/``, the code and the project's other text files for:

- absolute paths of a machine a run was made on (``/work/...``, ``/root/...``,
  ``/home/...``, ``/Users/...``, ``/mnt/...``); system paths such as
  ``/usr/bin/time`` or ``/proc/self/status`` name no machine and are allowed;
- "this VM" (also "this 2-core VM"): measurements name their hardware instead;
- issue numbers ("issue 11", "issues 3-4", "#12"), and notes about who did what
  ("other developers");
- citations of notes outside the repository (``original_code.md``,
  ``design.md``, ``shared/docs``): the original code is cited by file and line
  (``docs/original.md``).

Each pattern is also tested on a line it must catch and one it must let pass.
"""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

PATTERNS = {
    "a machine's absolute path": re.compile(r"(?<![\w.~$}])/(?:work|root|home|Users|mnt)/", re.I),
    "this VM": re.compile(r"\bthis\s+(?:[\w-]+\s+){0,2}VMs?\b", re.I),
    "an issue number": re.compile(r"\bissues?\s*#?\d+|(?<![\w&#/'\"])#\d{1,5}\b", re.I),
    "who did what": re.compile(r"\bother\s+developers?\b|\bdevelopers?'\s+work\b", re.I),
    "a note outside the repository": re.compile(r"\boriginal_code\.md\b|(?<![\w/])design\.md\b|\bshared/docs\b"),
}


def _texts():
    names = [
        "README.md", "run_mnist.py", "setup.py", "Makefile", "MANIFEST.in", "pytest.ini", "CITATION.cff", "LICENSE",
        ".ci/run",
    ]  # fmt: skip
    paths = [REPO / n for n in names] + sorted(REPO.glob("requirements*.txt")) + sorted((REPO / "docs").rglob("*.md"))
    for top in ("untapped", "tests", "parmesan_compat", "bench"):
        paths += sorted((REPO / top).rglob("*.py"))
    here = pathlib.Path(__file__).resolve()
    return [(p, p.read_text()) for p in paths if p.is_file() and p != here]


def test_the_texts_were_found():
    names = {p.relative_to(REPO).as_posix() for p, _ in _texts()}
    assert {"README.md", "docs/paper.md", "untapped/model.py", "tests/test_docs.py", "run_mnist.py"} <= names


def test_no_machine_paths_vm_or_issue_numbers():
    found = [
        f"{path.relative_to(REPO)}:{i}: {what}: {line.strip()[:120]}"
        for path, text in _texts()
        for i, line in enumerate(text.splitlines(), 1)
        for what, pattern in PATTERNS.items()
        if pattern.search(line)
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "what, caught, allowed",
    [
        ("a machine's absolute path", "--out /work/study/results", "reported by `/usr/bin/time -v`"),
        ("a machine's absolute path", "UNTAPPED_DATA_DIR=/home/me/mnist", "read from `/proc/self/status`"),
        ("a machine's absolute path", "cache in /root/.cache", "default `~/.cache/untapped`"),
        ("this VM", "on this 2-core VM (AMD EPYC)", "on a 2-core virtual machine (AMD EPYC)"),
        ("this VM", "measured on this VM", "a VM with two cores"),
        ("an issue number", "the study of issue 11", "the issue's figures"),
        ("an issue number", "see #12 for the plan", "# 1. Data"),
        ("an issue number", "fixed in issues 3-4", "color '#1f77b4'"),
        ("who did what", "two other developers' work", "other work"),
        ("a note outside the repository", "(``original_code.md`` §6.2)", "(``docs/original.md``)"),
        ("a note outside the repository", "(``design.md`` §3)", "(``docs/fidelity.md`` item 3)"),
    ],
)
def test_each_pattern_catches_what_it_is_for(what, caught, allowed):
    assert PATTERNS[what].search(caught)
    assert not PATTERNS[what].search(allowed)
