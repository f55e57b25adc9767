"""Every relative Markdown link in README.md, docs/*.md and experiments/results/README.md resolves: its file exists
and, for a `#anchor` on a Markdown file (or on the page itself), a heading of that file has that anchor (GitHub's
slugs: lowercase, spaces to '-', punctuation other than '-' and '_' dropped, a repeated heading numbered -1, -2, ...).
Links to web addresses and mail are not followed (no network)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "experiments" / "results" / "README.md"]

LINK = re.compile(r"(?<!\\)!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^()\s>]+(?:\([^()\s]*\))?[^()\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
FENCE = re.compile(r"^\s*(```|~~~)")
EXTERNAL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//)")  # http:, https:, mailto:, ...


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text (before de-duplication)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text)                       # HTML tags and comments
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)                      # \w keeps letters, digits and '_'
    return text.replace(" ", "-")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced and indented code blocks."""
    out, fence, prev_blank, in_code = [], False, True, False
    for n, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            fence = not fence
            continue
        if fence:
            continue
        if not line.strip():
            prev_blank = True
            continue
        in_code = line.startswith("    ") and (prev_blank or in_code)
        prev_blank = False
        if not in_code:
            out.append((n, line))
    return out


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text()):
        m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        k = seen.get(base, 0)
        seen[base] = k + 1
        found.add(base if k == 0 else f"{base}-{k}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    out = []
    for n, line in prose_lines(path.read_text()):
        line = re.sub(r"`[^`]*`", "", line)  # code spans show text, not links
        out += [(n, m.group(1)) for m in LINK.finditer(line)]
        out += [(n, m.group(1)) for m in REFERENCE.finditer(line)]
    return out


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for n, target in links(page):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        where = f"{page.relative_to(root)}:{n}: ({target})"
        shown = dest.relative_to(root) if dest.is_relative_to(root) else dest
        if not dest.exists():
            problems.append(f"{where} no such file {shown}")
        elif anchor and dest.suffix.lower() == ".md" and anchor not in anchors(dest):
            problems.append(f"{where} no heading with the anchor #{anchor} in {shown}")
    return problems


def test_slug_is_githubs():
    assert slug("GPU knobs (all off by default)") == "gpu-knobs-all-off-by-default"
    assert slug("Fetching them: `python -m dps_map.weights`") == "fetching-them-python--m-dps_mapweights"
    assert slug("Guidance units (`sampler.guidance_units: vp | euler`, every sampler)") == \
        "guidance-units-samplerguidance_units-vp--euler-every-sampler"
    assert slug("The samplers' options in short") == "the-samplers-options-in-short"


def test_the_checker_finds_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# B\n\n## Two words: `x.y`\n\n## Two words: `x.y`\n")
    page = tmp_path / "README.md"
    page.write_text("# Top\n\n[ok](docs/b.md) [ok](docs/b.md#two-words-xy) [ok](docs/b.md#two-words-xy-1) "
                    "[ok](#top) [web](https://example.org/x#y)\n\n    [in code](nowhere.md)\n\n"
                    "[gone](docs/c.md) [bad anchor](docs/b.md#three-words) [bad self](#bottom)\n")
    problems = broken_links(page, tmp_path)
    assert len(problems) == 3, problems
    assert "no such file docs/c.md" in problems[0]
    assert "#three-words" in problems[1] and "#bottom" in problems[2]


@pytest.mark.parametrize("page", [p for p in PAGES if p.is_file()], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)
