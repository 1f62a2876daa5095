"""The README's commands run as written: options, subcommands, files, targets and the Python example's names.

Fast checks (no graph is compiled): every ``run_mnist.py``, ``untapped`` and
``untapped-reference`` command in the README's code blocks names only
subcommands and options that the command's ``--help`` lists, ``python
run_mnist.py --help`` itself runs, the ``make`` targets and ``pip`` files
exist, and every name the Python example imports or calls exists. The
commands themselves are run by their own tests (``tests/test_cli.py``,
``tests/test_reference.py``) and by ``make test``. The same checks cover
the longer Python example of ``docs/experiment.md`` and the ``make`` and
``pip`` commands of ``docs/development.md``.
"""

import ast
import importlib
import importlib.util
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def code_blocks(text=README):
    """The README's indented code blocks, each as one string."""
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("    ") or (current and not line.strip()):
            current.append(line[4:])
        elif current:
            blocks.append("\n".join(current).strip("\n"))
            current = []
    return [b for b in blocks if b]


def commands(prefix, text=README, anywhere=False):
    """Shell lines of the code blocks that start with (or, ``anywhere``, hold) ``prefix``, without their comments.

    A trailing backslash continues a line.
    """
    lines = [
        line.split("  #")[0].strip() for block in code_blocks(text) for line in block.replace("\\\n", " ").splitlines()
    ]
    return [shlex.split(line) for line in lines if (prefix in line if anywhere else line.startswith(prefix))]


def _help(*args):
    done = subprocess.run([sys.executable, *args, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _options_and_subcommands(words, help_of):
    """Check ``words`` (after the program) against the help of the program and of its subcommand, if any."""
    main_help = help_of()
    subcommands = (
        set(re.findall(r"^  (\w[\w-]*)\s", main_help.split("Commands:")[1], re.M))
        if "Commands:" in main_help
        else set()
    )
    sub = words[0] if words and words[0] in subcommands else None
    text = help_of(sub) if sub else main_help
    for word in words:
        if word.startswith("--"):
            assert re.search(rf"(?<![\w-]){re.escape(word.split('=')[0])}\b", text), (
                f"{word} is not an option of {sub or 'the command'}"
            )
    return sub


def test_the_readme_has_its_front_door_commands():
    lines = {line.split("  #")[0].strip() for block in code_blocks() for line in block.splitlines()}
    assert {
        "make run", "make test", "pip install -r requirements.txt -e .",
        "python run_mnist.py --epochs 150 --batch 10000",
    } <= lines  # fmt: skip
    assert "python -m pytest -q" in README


@pytest.mark.parametrize("page", ["README.md", "docs/experiment.md", "docs/cluster.md"])
def test_every_run_mnist_command_names_existing_options(page):
    lines = commands("python run_mnist.py", (REPO / page).read_text(), anywhere=True)
    found = [words[words.index("run_mnist.py") - 1 :] for words in lines]
    assert len(found) >= 1
    helps = {}

    def help_of(sub=None):
        if sub not in helps:
            helps[sub] = _help("run_mnist.py", *([sub] if sub else []))
        return helps[sub]

    for words in found:
        assert words[0] == "python", words
        _options_and_subcommands(words[2:], help_of)


def test_every_untapped_reference_command_names_an_existing_subcommand():
    found = commands("untapped-reference")
    assert found
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["untapped-reference"] == "untapped.entry_points:reference"
    helps = {}

    def help_of(sub=None):
        if sub not in helps:
            helps[sub] = _help(
                "-c", "from untapped.entry_points import reference; reference()", *([sub] if sub else [])
            )
        return helps[sub]

    for words in found:
        assert _options_and_subcommands(words[1:], help_of) in ("export", "compare")


def test_every_untapped_command_names_an_existing_subcommand_and_its_options():
    found = commands("untapped ")
    assert {words[1] for words in found} == {"train", "report", "reference"}
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["untapped"] == "untapped.entry_points:untapped"
    helps = {}

    def help_of(sub=None):
        if sub not in helps:
            helps[sub] = _help("-c", "from untapped.entry_points import untapped; untapped()", *([sub] if sub else []))
        return helps[sub]

    assert [_options_and_subcommands(words[1:], help_of) for words in found] == [words[1] for words in found]


@pytest.mark.parametrize("page", ["README.md", "docs/development.md"])
def test_make_targets_and_install_files_exist(page):
    text = (REPO / page).read_text()
    makefile = (REPO / "Makefile").read_text()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for words in commands("make", text):
        assert re.search(rf"^{re.escape(words[1])}:", makefile, re.M), words
    assert "run_mnist.py --epochs 150 --batch 10000" in makefile
    for words in commands("pip install", text):
        for i, word in enumerate(words):
            if word == "-r":
                assert (REPO / words[i + 1]).is_file(), words
            if word.startswith(".[") or word.startswith("'.["):
                extra = word.strip("'.[]")
                assert extra in extras, words


def python_example(text=README):
    [example] = [b for b in code_blocks(text) if b.startswith("import untapped")]
    return example


@pytest.mark.parametrize("page", ["README.md", "docs/experiment.md"])
def test_the_python_example_parses_and_every_name_it_uses_exists(page):
    tree = ast.parse(python_example((REPO / page).read_text()))
    modules = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                modules[alias.asname or alias.name] = importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                    alias.name
                )
                modules[alias.asname or alias.name] = (
                    getattr(module, alias.name, None) or importlib.import_module(f"{node.module}.{alias.name}")
                )
    from untapped.checkpoint import Checkpoint

    objects = dict(modules, model=modules["SSDGM"], again=modules["SSDGM"])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in objects:
            owner = objects[node.value.id]
            assert hasattr(owner, node.attr), f"{node.value.id}.{node.attr}"
    assert hasattr(Checkpoint, "restore")


@pytest.mark.parametrize("quick", ["python run_mnist.py --help"])
def test_the_quick_commands_run(quick):
    words = shlex.split(quick)
    assert words in commands("python run_mnist.py")
    done = subprocess.run([sys.executable, *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--epochs" in done.stdout, done.stderr
