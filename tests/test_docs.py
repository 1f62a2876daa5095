"""Every citation resolves: paths, links, anchors, functions, sections and the original code's lines.

Scans the README, ``docs/`` and the code (``untapped/``, ``tests/``,
``parmesan_compat/``, ``bench/``, the scripts) for what they cite, and checks
each against the repository itself:

- a repository path (``untapped/...``, ``tests/...``, ``docs/...``, ...) exists;
- a Markdown link to a local file exists, and its ``#anchor`` is a heading of
  the linked page; a link whose text names a function, class or constant
  (```name``` or ```Class.method```) opens a Python file that defines it
  (this is how ``docs/paper.md`` links every equation to its code);
- a test cited as ``tests/test_x.py::test_name`` exists;
- a section cited as ``docs/page.md, *Heading*`` or ``README, *Heading*`` is a
  heading of that page, and ``docs/reference_format.md §7.6`` a numbered one;
- ``docs/fidelity.md`` item N is one of the page's items;
- the original code cited as ``FILE:LINE`` is a file of the table in
  ``docs/original.md`` and LINE is within its line count there.

No network and no PyTensor: plain text and regular expressions. Each check
is also run on a small repository of its own, where it must catch a broken
citation and pass a good one. One more test makes sure that the package
docstring says truly when Lasagne loads.
"""

import pathlib
import re
import subprocess
import sys

import pytest

from untapped.presets import VARIANTS

REPO = pathlib.Path(__file__).resolve().parents[1]
TOP_DIRS = ("untapped", "tests", "docs", "bench", "parmesan_compat", ".ci")


def _sources(repo=REPO):
    """The files whose citations must resolve: (path, text)."""
    paths = [repo / "README.md", repo / "run_mnist.py", repo / "setup.py", repo / "Makefile", repo / ".ci" / "run"]
    paths += sorted((repo / "docs").rglob("*.md"))
    for top in ("untapped", "tests", "parmesan_compat", "bench"):
        paths += sorted((repo / top).rglob("*.py"))
    # This file's own examples are broken on purpose.
    return [(p, p.read_text()) for p in paths if p.is_file() and p != pathlib.Path(__file__).resolve()]


# ---------------------------------------------------------------------------
# Headings and anchors (GitHub's rules)


def _slug(heading):
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(text):
    """The page's headings, outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            out.append(line.lstrip("#").strip())
    return out


def anchors(text):
    seen, out = {}, set()
    for h in headings(text):
        s = _slug(h)
        n = seen.get(s, 0)
        out.add(s if n == 0 else f"{s}-{n}")
        seen[s] = n + 1
    return out


# ---------------------------------------------------------------------------
# Names defined in a Python file


def defines(py_text, name):
    """Whether ``name`` (``f``, ``Class``, ``CONSTANT`` or ``Class.method``) is defined in ``py_text``."""
    *owner, last = name.split(".")
    if owner:
        m = re.search(rf"^class {re.escape(owner[-1])}\b.*?(?=^\S|\Z)", py_text, re.M | re.S)
        if not m:
            return False
        py_text = m.group()
        return bool(re.search(rf"^\s+def {re.escape(last)}\b", py_text, re.M))
    return bool(re.search(rf"^(?:def|class) {re.escape(last)}\b|^{re.escape(last)}\s*[:=]", py_text, re.M))


# ---------------------------------------------------------------------------
# The checks; each returns a list of problems, one line each


LINK = re.compile(r"(?<!!)\[([^\]\n]*)\]\(([^)\s]+)\)|!\[([^\]\n]*)\]\(([^)\s]+)\)")
URL_LINK = re.compile(r"\[[^\]\n]*\]\((?:https?|mailto):[^)]*\)|<?https?://\S+")
PATH = re.compile(r"(?<![\w./~-])((?:%s)/[\w./-]*[\w/])" % "|".join(re.escape(t) for t in TOP_DIRS))
TEST_ID = re.compile(r"(tests/test_\w+\.py)::(\w+)")
SECTION = re.compile(r"(README(?:\.md)?|docs/[\w/.-]+\.md)`{0,2},? \*([^*\n]+)\*")
NUMBERED = re.compile(r"(?:docs/)?reference_format\.md`{0,2},? ((?:§\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?(?:, )?)+)")
ITEM = re.compile(r"fidelity\.md`{0,2},? items? (\d+)(?:-(\d+))?")


def check_links(path, text, repo=REPO):
    problems = []
    if path.suffix != ".md":
        return problems
    for m in LINK.finditer(text):
        label, target = (m.group(1), m.group(2)) if m.group(2) else (m.group(3), m.group(4))
        if re.match(r"(?:https?|mailto):", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{path.relative_to(repo)}: link to a missing file: {target}")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            problems.append(f"{path.relative_to(repo)}: no heading #{anchor} in {file_part or path.name}")
        name = re.fullmatch(r"`([A-Za-z_][\w.]*)`", label.strip())
        if name and dest.suffix == ".py" and not defines(dest.read_text(), name.group(1)):
            problems.append(f"{path.relative_to(repo)}: {file_part} defines no {name.group(1)}")
    return problems


#: Run groups of a study (``untapped/<variant>``) are names, not paths.
GROUPS = {f"untapped/{name}" for name in VARIANTS}


def _path_exists(cited, repo):
    """A file or folder, or ``module/path.NAME``: a Python file that defines NAME."""
    if (repo / cited).exists():
        return True
    head, _, name = cited.rpartition(".")
    module = repo / f"{head}.py"
    return bool(head) and module.is_file() and defines(module.read_text(), name)


def check_paths(path, text, repo=REPO):
    problems = []
    plain = URL_LINK.sub(" ", text)
    for m in PATH.finditer(plain):
        cited = m.group(1).rstrip(".")
        if cited in GROUPS:
            continue
        if not _path_exists(cited, repo):
            problems.append(f"{path.relative_to(repo)}: cites a path that does not exist: {cited}")
    for m in TEST_ID.finditer(text):
        test_file = repo / m.group(1)
        if not test_file.exists() or not defines(test_file.read_text(), m.group(2)):
            problems.append(f"{path.relative_to(repo)}: no test {m.group(1)}::{m.group(2)}")
    return problems


def _page(cited, repo=REPO):
    return repo / ("README.md" if cited.startswith("README") else cited)


def check_sections(path, text, repo=REPO):
    problems = []
    for m in SECTION.finditer(text):
        page = _page(m.group(1), repo)
        wanted = m.group(2).strip().lower()
        if not page.exists() or not any(h.lower().startswith(wanted) for h in headings(page.read_text())):
            problems.append(f"{path.relative_to(repo)}: no section *{m.group(2)}* in {m.group(1)}")
    numbered = {
        re.match(r"[\d.]+", h).group().rstrip(".")
        for h in headings((repo / "docs/reference_format.md").read_text())
        if re.match(r"\d", h)
    }
    for m in NUMBERED.finditer(text):
        for section in re.findall(r"§(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?", m.group(1)):
            for s in filter(None, section):
                if s not in numbered:
                    problems.append(f"{path.relative_to(repo)}: no section §{s} in docs/reference_format.md")
    return problems


def fidelity_items(repo=REPO):
    text = (repo / "docs" / "fidelity.md").read_text()
    items = set()
    for first, last in re.findall(r"^\| (\d+)(?:-(\d+))? \|", text, re.M):
        items.update(range(int(first), int(last or first) + 1))
    intro = text.split("\n|", 1)[0]
    items.update(int(n) for n in re.findall(r"\b(\d+) \(", intro))
    return items


def check_items(path, text, repo=REPO):
    known = fidelity_items(repo)
    return [
        f"{path.relative_to(repo)}: docs/fidelity.md has no item {n}"
        for first, last in ITEM.findall(text)
        for n in range(int(first), int(last or first) + 1)
        if n not in known
    ]


def original_files(repo=REPO):
    """``{cited name: line count}`` from the table of docs/original.md."""
    rows = re.findall(r"^\| `([\w/.]+)` \| [^|]+ \| (\d+) \|", (repo / "docs" / "original.md").read_text(), re.M)
    return {name: int(lines) for name, lines in rows}


def check_original(path, text, repo=REPO):
    files = original_files(repo)
    names = "|".join(re.escape(n) for n in sorted(files, key=len, reverse=True))
    problems = []
    for m in re.finditer(
        rf"(?<![\w/])((?:untapped/|examples/(?:datasets/|plotting/)?)?(?:{names})|\w+\.py)"
        r":(\d+(?:(?:-|, ?)\d+)*)",
        text,
    ):
        name, lines = m.group(1), [int(n) for n in re.findall(r"\d+", m.group(2))]
        short = re.sub(r"^(untapped/|examples/(datasets/|plotting/)?)", "", name)
        if short not in files:
            if not (repo / name).exists() and not any((repo / top / name).exists() for top in TOP_DIRS):
                problems.append(
                    f"{path.relative_to(repo)}: {name}:{m.group(2)} is no file of the original (docs/original.md) "
                    "or of this repository"
                )
            continue
        if any(not 1 <= n <= files[short] for n in lines):
            problems.append(
                f"{path.relative_to(repo)}: {name}:{m.group(2)} is past the original file's {files[short]} lines"
            )
    return problems


CHECKS = (check_links, check_paths, check_sections, check_items, check_original)


def problems_in(sources, repo=REPO):
    return [p for path, text in sources for check in CHECKS for p in check(path, text, repo)]


# ---------------------------------------------------------------------------
# Tests


def test_every_citation_resolves():
    problems = problems_in(_sources())
    assert not problems, "\n".join(problems)


def test_docs_paper_links_a_function_for_every_equation_it_covers():
    text = (REPO / "docs" / "paper.md").read_text()
    for part in (
        "Eq. 1", "Eq. 2", "Eq. 3", "Eq. 4", "Eq. 5", "Eq. 6", "Eq. 7", "Eq. 8", "Eqs. 10-16", "Eq. 17", "Algorithm 1",
        "App. D",
    ):  # fmt: skip
        section = re.search(rf"^## {re.escape(part)}\b.*?(?=^## |\Z)", text, re.M | re.S)
        assert section, f"docs/paper.md has no section {part}"
        body = section.group()
        assert "```math" in body or part == "App. D" and "\n|---|" in body, f"{part}: no formula (App. D: no table)"
        assert re.search(r"\[`\w[\w.]*`\]\(\.\./[\w/]+\.py\)", body), f"{part}: no link to the code"


def test_the_original_table_matches_the_cited_names():
    files = original_files()
    assert files["S2S_DGM.py"] == 1755 and files["M12.py"] == 1176 and len(files) == 9


@pytest.fixture()
def tiny_repo(tmp_path):
    """A repository of three files, to show that the checks catch what they are for."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "untapped").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "untapped" / "terms.py").write_text(
        "def labeled_elbo(x):\n    return x\n\nclass Box:\n    def area(self):\n        pass\n"
    )
    (tmp_path / "tests" / "test_terms.py").write_text("def test_it():\n    pass\n")
    (tmp_path / "docs" / "fidelity.md").write_text(
        "# Fidelity\n\n| # | item |\n|---|---|\n| 1 | epochs |\n| 6-7 | weights |\n\n## Gradient flow (tested)\n"
    )
    (tmp_path / "docs" / "reference_format.md").write_text("# Format\n\n## 7. Datasets\n\n### 7.6 Steps\n")
    (tmp_path / "docs" / "original.md").write_text(
        "| cited as | path | lines |\n|---|---|---|\n| `S2S_DGM.py` | `untapped/S2S_DGM.py` | 1755 |\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    "text, found",
    [
        ("[`labeled_elbo`](../untapped/terms.py)", None),
        ("[`Box.area`](../untapped/terms.py)", None),
        ("[`unlabeled_elbo`](../untapped/terms.py)", "defines no unlabeled_elbo"),
        ("[`Box.volume`](../untapped/terms.py)", "defines no Box.volume"),
        ("[terms](../untapped/term.py)", "missing file"),
        ("[flow](fidelity.md#gradient-flow-tested)", None),
        ("[flow](fidelity.md#gradient-flow)", "no heading #gradient-flow"),
        ("see `untapped/terms.py` and `tests/test_terms.py::test_it`", None),
        ("see `untapped/term.py`", "does not exist: untapped/term.py"),
        ("`tests/test_terms.py::test_other`", "no test tests/test_terms.py::test_other"),
        ("(``docs/fidelity.md``, *Gradient flow*)", None),
        ("(``docs/fidelity.md``, *Memory*)", "no section *Memory*"),
        ("``docs/reference_format.md`` §7.6", None),
        ("``docs/reference_format.md`` §7.9", "no section §7.9"),
        ("``docs/fidelity.md`` item 7", None),
        ("``docs/fidelity.md`` item 8", "has no item 8"),
        ("the original's ``S2S_DGM.py:1609-1611``", None),
        ("the original's ``S2S_DGM.py:1756``", "past the original file's 1755 lines"),
        ("the original's ``S2S.py:1609``", "is no file of the original"),
    ],
)
def test_the_checks_catch_a_broken_citation(tiny_repo, text, found):
    page = tiny_repo / "docs" / "page.md"
    page.write_text(text + "\n")
    problems = problems_in([(page, text)], repo=tiny_repo)
    if found is None:
        assert problems == []
    else:
        assert len(problems) == 1 and found in problems[0], problems


def test_the_package_docstring_says_when_lasagne_loads():
    """untapped/__init__.py: importing the package loads neither PyTensor nor Lasagne; the modules it names do
    load Lasagne."""
    probe = (
        "import sys, importlib; importlib.import_module(sys.argv[1]); "
        "print(int('pytensor' in sys.modules), int('lasagne' in sys.modules))"
    )

    def loaded(module):
        done = subprocess.run(
            [sys.executable, "-c", probe, module], cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    doc = (REPO / "untapped" / "__init__.py").read_text()
    assert "no PyTensor or Lasagne loaded" in doc
    assert loaded("untapped") == ["0", "0"]
    for module in ("untapped.paper.layers", "untapped.paper.networks", "parmesan_compat.layers", "untapped.model"):
        assert f":mod:`{module}`" in doc
        assert loaded(module) == ["1", "1"], module
