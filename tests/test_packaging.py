"""The package's metadata says what CI tests: its ranges run from one lock to the other.

``pyproject.toml`` holds the requirement ranges; ``requirements.txt`` (Python
3.11) pins the low end of each and ``requirements-latest.txt`` (Python 3.12
and later) the newest releases; CI runs the suite on both. These tests hold
the three files, the installed metadata and the Makefile to one another.
"""

import importlib.metadata
import os
import re
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

import untapped
from conftest import REPO

LOCK = "requirements.txt"
LATEST = "requirements-latest.txt"
DASK = "requirements-dask.txt"
PYMC = "requirements-pymc.txt"


def project():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def ranges(requirements):
    """``{name: SpecifierSet}`` of requirement strings, names canonical."""
    parsed = [Requirement(line) for line in requirements]
    return {canonicalize_name(r.name): r.specifier for r in parsed}


def pins(name):
    """``{name: Version}`` of a lock file; every line in it is an exact pin."""
    pinned = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{name}: {line} is not pinned"
        pinned[canonicalize_name(requirement.name)] = Version(spec.version)
    return pinned


def checked_ranges():
    """The requirements both locks pin: the dependencies and the test extra."""
    meta = project()
    return ranges(meta["dependencies"]) | ranges(meta["optional-dependencies"]["test"])


def low_end(specifier: SpecifierSet):
    (low,) = [Version(s.version) for s in specifier if s.operator in (">=", "==")]
    return low


@pytest.mark.parametrize("lock", [LOCK, LATEST])
def test_each_lock_pins_every_requirement_within_its_range(lock):
    pinned = pins(lock)
    assert set(pinned) == set(checked_ranges())
    outside = {name: str(pinned[name]) for name, spec in checked_ranges().items() if pinned[name] not in spec}
    assert not outside, f"{lock} pins outside pyproject.toml's ranges: {outside}"


def test_the_ranges_start_at_the_python_3_11_lock():
    pinned = pins(LOCK)
    assert {name: low_end(spec) for name, spec in checked_ranges().items()} == pinned


def test_the_latest_lock_is_in_pytensors_last_tested_minor():
    (cap,) = [Version(s.version) for s in checked_ranges()["pytensor"] if s.operator == "<"]
    newest = pins(LATEST)["pytensor"]
    assert newest < cap and (newest.major, newest.minor) == (cap.major, cap.minor - 1)


def test_the_python_range_starts_at_the_locks_python():
    assert SpecifierSet(project()["requires-python"]) == SpecifierSet(">=3.11")


def test_the_dask_extra_starts_at_its_pin():
    (extra,) = [Requirement(r) for r in project()["optional-dependencies"]["dask"]]
    (pinned,) = pins(DASK).items()
    assert pinned == (canonicalize_name(extra.name), low_end(extra.specifier))


def test_pymc_is_pinned_for_the_latest_lock():
    assert list(pins(PYMC)) == ["pymc"]
    assert "requirements-latest.txt" in (REPO / PYMC).read_text()


def test_the_installed_metadata_is_pyprojects_with_one_version():
    installed = importlib.metadata.metadata("untapped")
    assert installed["Version"] == untapped.__version__
    assert installed["Requires-Python"] == project()["requires-python"]
    base = [Requirement(r) for r in installed.get_all("Requires-Dist") if "extra ==" not in r]
    assert {canonicalize_name(r.name): r.specifier for r in base} == ranges(project()["dependencies"])
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["untapped-reference"] == "untapped.entry_points:reference"


def make_dry_run(*assignments):
    """What ``make test`` would run; the variables of a make that runs these tests are not passed on."""
    passed_on = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHON", "LOCK", "VENV", "EXTRAS"}
    env = {k: v for k, v in os.environ.items() if k not in passed_on}
    result = subprocess.run(["make", "-n", "-B", "test", *assignments], cwd=REPO, env=env, capture_output=True,
                            text=True, check=True)
    return result.stdout


def test_make_builds_one_environment_per_lock_and_python():
    default = make_dry_run()
    assert "python3 -m venv .venv\n" in default
    assert re.search(r"\.venv/bin/python -m pip install -q -r requirements\.txt +-e", default)
    latest = make_dry_run("PYTHON=python3.12", f"LOCK={LATEST}", "EXTRAS=[dask]")
    assert "python3.12 -m venv .venv-latest-python3.12\n" in latest
    assert f"-r {LATEST} -r {DASK} -e \".[dask]\"" in latest
    assert ".venv-latest-python3.12/bin/python -m pytest -q" in latest
    bench = make_dry_run("PYTHON=python3.11", "EXTRAS=[dask,bench]")
    assert '-r requirements.txt -r requirements-dask.txt -r requirements-bench.txt -e ".[dask,bench]"' in bench
