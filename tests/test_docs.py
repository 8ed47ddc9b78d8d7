"""README.md stays an entry point, and every relative link in it and in docs/*.md resolves.

Fast: reads files only, starts no process.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 350

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+).+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The file's lines outside fenced code blocks, with inline code removed."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(INLINE_CODE.sub("", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation except '-' and '_'
    dropped, spaces turned into '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"[*`]", "", text).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in "-_ ")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a markdown file, repeated headings numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    problems = []
    prose = "\n".join(prose_lines(path.read_text(encoding="utf-8")))  # a link's text may wrap
    for target in LINK.findall(prose):
        if re.match(r"^(https?:|mailto:)", target, re.IGNORECASE):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(REPO)}: link to {target!r}"
        if REPO not in resolved.parents and resolved != REPO:
            problems.append(f"{where} leaves the repository")
        elif not resolved.exists():
            problems.append(f"{where}: {resolved.relative_to(REPO)} does not exist")
        elif anchor and resolved.suffix == ".md" and unquote(anchor).lower() not in anchors(resolved):
            problems.append(f"{where}: no heading with anchor #{anchor} in {resolved.relative_to(REPO)}")
    return problems


def test_readme_is_at_most_350_lines():
    lines = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_every_relative_link_in_readme_and_docs_resolves():
    files = markdown_files()
    assert len(files) > 1, "docs/*.md is missing"
    problems = [problem for path in files for problem in broken_links(path)]
    assert not problems, "\n".join(problems)


PROJECT_PATH = re.compile(r"(?<![\w./-])((?:cohort|launch|tests|bench|scripts|slurm|configs)/[\w./-]*[\w/])")
"""A path into the repository as the docs write them (``cohort/run/opening.py``, ``tests/scenarios/``)."""


def named_paths(path: Path) -> set[str]:
    """Every repository path a markdown file names, in prose or code, patterns (``*``, ``{a,b}``,
    ``<name>``) and paths inside a run or data folder aside."""
    text = path.read_text(encoding="utf-8")
    return {m.group(1) for m in PROJECT_PATH.finditer(text) if text[m.end() : m.end() + 1] not in ("*", "{", "<")}


def test_every_file_the_docs_name_exists():
    missing = [
        f"{doc.relative_to(REPO)}: {name}"
        for doc in [*markdown_files(), REPO / "slurm" / "README.md"]
        for name in sorted(named_paths(doc))
        if not (REPO / name.split("::")[0]).exists()
    ]
    assert not missing, "\n".join(missing)


def test_the_slug_rule_is_githubs():
    assert slug("The papers' claims, tested on digits") == "the-papers-claims-tested-on-digits"
    assert (
        slug("More methods: CS-KD, semi-supervised DML, calibration baselines, KDCL")
        == "more-methods-cs-kd-semi-supervised-dml-calibration-baselines-kdcl"
    )
    assert slug("`cohort submit`") == "cohort-submit"
