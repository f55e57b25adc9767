"""Check that every published result is traceable and current (`make check-results`; seconds, no network).

    python -m tools.check_results [--results DIR] [--docs FILE ...] [--no-citations] [--list]

Fails (exit 1), naming each problem, when

1. **a result file has no provenance**: every file under experiments/results/ (md, csv, png, ...; not
   README.md or the records themselves) must be listed, with its sha256, in exactly one
   `<stem>.provenance.json` (written by `python -m tools.provenance`); a file changed after its
   record was written (sha256 differs) fails too, as does a record that names a missing file, a failed
   command or lacks a field;
2. **a result was made with assets other than the shipped ones**: each asset sha256 a record holds (the
   prior, adapters and references under dps_map/assets/ the run read) must equal the file's today;
3. **a number in README.md or docs/*.md (and experiments/results/README.md) that comes from a run cites no
   result file, or one that does not contain it** (the convention below).

A record with `"stale": "<reason>"` (`python -m tools.provenance --stale STEM REASON`) is reported
as STALE and accepted: rule 2 is not applied to it. `--list` prints every record (files, commit, assets,
date, wall time).

**Citation convention** (rule 3). A document is cut into blocks: paragraphs, list items, tables and
headings; fenced and indented code blocks are skipped.

- A block *cites* a result file by naming it: a path `experiments/results/NAME.ext`, a link to it, or a
  file name in backticks that exists in the results folder (`restoration_tiny.md`; `frontier_tiny.md`/`.png`;
  a group `frontier_{gmm,tiny}.*`), or invisibly with an HTML comment `<!-- results: NAME.md ... -->`.
  Citing a file cites its result group (the files of its provenance record, e.g. the .md and its .csv).
  The card of a shipped asset (`dps_map/assets/tiny_prior.json`: written by its trainer, its weights'
  sha256 inside) may be cited the same way, by its path.
  A block that names none inherits the citations of the closest block above it in the same section
  (under the same heading) that names some; a table inherits those of its caption that way.
- The numbers checked are the decimal numbers of the block's prose and tables (`25.27`, `0.015`, `3.0e4`,
  `± 0.12`), not integers (counts, steps and seeds are configuration more often than measurements), not
  numbers in `code`, link targets or version strings, not values assigned with `=` (`sigma_y=0.05`), not
  ratios written `1.3x` or percentages.
- Each must occur in a cited group: some number in its files that rounds to it at the precision written
  (`10.6` is found by `10.55`; `3.0e4` by `30123.4`), sign ignored. A number with an explicit sign that
  is not found (`+0.2 dB`, a difference computed from two cited numbers) is reported as derived, not as a
  failure.
- Numbers that are not from a run (configuration values, published numbers of the paper, estimates) are
  exempted by `<!-- not-from-a-run: 0.05 1e-5 -->` in the block (or `<!-- not-from-a-run -->` for the
  whole block). A block with checked numbers, no citation (own or inherited) and a word of measurement
  (measured, dB, PSNR, SSIM, LPIPS, FID, wall, min, ms, s/step, GiB, GB, nats, chroma, eps loss, x0 error,
  score error) fails as "cites no file". Numbers in arXiv identifiers are not checked.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dps_map.io import sha256_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SUFFIX = ".provenance.json"
REQUIRED = ("schema", "command", "commit", "assets", "machine", "started", "finished", "wall_s", "files", "steps")
NOT_RESULTS = {"README.md"}


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    derived: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, msg: str) -> None:
        self.failures.append(msg)


# -- 1 and 2: provenance ------------------------------------------------------------------------------
def result_files(results: Path) -> list[Path]:
    return sorted(p for p in results.rglob("*") if p.is_file() and p.name not in NOT_RESULTS
                  and not p.name.endswith(SUFFIX) and "__pycache__" not in p.parts)


def load_records(results: Path, report: Report) -> dict[str, dict]:
    records = {}
    for path in sorted(results.rglob("*" + SUFFIX)):
        name = path.relative_to(results).as_posix()
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            report.fail(f"{name}: unreadable provenance record ({err})")
            continue
        missing = [k for k in REQUIRED if k not in rec]
        if missing:
            report.fail(f"{name}: provenance record lacks {', '.join(missing)}")
            continue
        rec["_dir"] = path.parent
        records[name] = rec
    return records


def check_provenance(results: Path, root: Path, report: Report) -> dict[str, dict]:
    """Rules 1 and 2. Returns {result file (relative to results): its record}."""
    records = load_records(results, report)
    owner: dict[str, str] = {}
    shipped: dict[str, str | None] = {}
    for name, rec in records.items():
        stale = rec.get("stale")
        bad_steps = [s.get("command", "?") for s in rec["steps"] if s.get("exit_code", 0) != 0]
        if bad_steps:
            report.fail(f"{name}: a step of the record failed: {bad_steps}")
        if not rec["files"]:
            report.fail(f"{name}: the record covers no file")
        for fname, digest in rec["files"].items():
            rel = (rec["_dir"] / fname).relative_to(results).as_posix()
            if rel in owner:
                report.fail(f"{rel}: in two provenance records ({owner[rel]}, {name})")
            owner[rel] = name
            path = results / rel
            if not path.is_file():
                report.fail(f"{name}: names {rel}, which does not exist")
            elif sha256_file(path) != digest:
                report.fail(f"{rel}: changed since its provenance was recorded ({name}): rerun its command "
                            f"through tools.provenance, or record a hand edit with "
                            f"`python -m tools.provenance --amend STEM --note ...`")
        wrong = []
        for asset, digest in rec["assets"].items():
            if asset not in shipped:
                p = Path(asset) if Path(asset).is_absolute() else root / asset
                shipped[asset] = sha256_file(p) if p.is_file() else None
            if shipped[asset] != digest:
                now = "absent" if shipped[asset] is None else f"shipped {shipped[asset][:12]}"
                wrong.append(f"{asset} (recorded {digest[:12]}, {now})")
        if rec.get("assets_unknown"):
            wrong.append("the assets it read were not recorded")
        if stale:
            report.stale.append(f"{name}: {stale}" + (f" [assets: {'; '.join(wrong)}]" if wrong else ""))
        elif wrong:
            report.fail(f"{name}: made with assets other than the shipped ones: {'; '.join(wrong)} "
                        f"(rerun it, or mark it `--stale STEM REASON`)")
    for path in result_files(results):
        rel = path.relative_to(results).as_posix()
        if rel not in owner:
            report.fail(f"{rel}: no provenance (no *.provenance.json lists it)")
    return {f: records[r] for f, r in owner.items()}


# -- 3: citations -------------------------------------------------------------------------------------
NUMBER = re.compile(r"(?<![\w.\-+/#=])([+\-−]?)(\d+\.\d+(?:[eE][+\-]?\d+)?|\d+[eE][+\-]?\d+)(?!\.?\d)(?![A-Za-z_%/])")
FILE_NUMBER = re.compile(r"[+\-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+\-]?\d+)?")
MEASURE_WORDS = re.compile(r"(\bmeasured\b|\bdB\b|PSNR|SSIM|LPIPS|\bFID\b|\bKID\b|\bwall\b|\bmin\b|"
                           r"\bminutes\b|\bs/step\b|\bms\b|\bs/sample\b|\bGiB\b|\bGB\b|\bnats\b|SW1|chroma|"
                           r"eps loss|x0 error|score error)")
COMMENT = re.compile(r"<!--(.*?)-->", re.S)
CODE_SPAN = re.compile(r"`[^`]*`")
LINK_TARGET = re.compile(r"\]\([^)]*\)")
URL = re.compile(r"https?://\S+")


@dataclass
class Block:
    doc: str
    line: int  # 1-based first line
    text: str
    kind: str  # paragraph / item / table / heading
    section: int


def blocks_of(text: str, doc: str) -> list[Block]:
    """Paragraphs, list items, tables and headings of a markdown text, code blocks dropped."""
    out, cur, start, kind = [], [], 0, None
    section = 0
    in_fence = False
    prev_blank = True

    def flush():
        nonlocal cur, kind
        if cur:
            out.append(Block(doc, start + 1, "\n".join(cur), kind, section))
        cur, kind = [], None

    for i, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if stripped.startswith("```") or stripped.startswith("~~~"):
            flush()
            in_fence = not in_fence
            prev_blank = False
            continue
        if in_fence:
            continue
        if not stripped:
            flush()
            prev_blank = True
            continue
        if line.startswith("    ") and (prev_blank or kind == "code") and kind not in ("item", "paragraph"):
            kind = "code"  # an indented code block: skipped
            cur = []
            prev_blank = False
            continue
        if kind == "code":
            kind = None
        if stripped.startswith("#"):
            flush()
            section += 1
            start, kind, cur = i, "heading", [line]
            flush()
        elif stripped.startswith("|"):
            if kind != "table":
                flush()
                start, kind = i, "table"
            cur.append(line)
        elif re.match(r"^\s*([-*+]|\d+\.)\s", line):
            flush()
            start, kind, cur = i, "item", [line]
        else:
            if kind == "table":
                flush()
            if not cur:
                start, kind = i, "paragraph"
            cur.append(line)
        prev_blank = False
    flush()
    return out


def cited_names(text: str, results: Path) -> set[str]:
    """Result files a block names (relative to results), and shipped asset cards it names ('card:<path>')."""
    names = set()
    root = results.parents[1]
    for m in re.finditer(r"dps_map/assets/[\w./-]+\.json", text):
        if (root / m.group(0)).is_file():
            names.add("card:" + m.group(0))
    for m in re.finditer(r"experiments/results/([\w./{},*-]+)", text):
        names |= _expand(m.group(1).rstrip(".,;:)"), results)
    for m in re.finditer(r"`([^`]+)`", text):
        token = m.group(1).strip()
        if re.fullmatch(r"[\w{},*./-]+\.[\w{},*]+", token) and "/" not in token.replace("experiments/results/", ""):
            names |= _expand(token, results)
    # `a.md`/`.png`: the second form names the first's stem
    for m in re.finditer(r"`([\w-]+)\.[\w]+`\s*/\s*`\.(\w+)`", text):
        names |= _expand(f"{m.group(1)}.{m.group(2)}", results)
    for m in COMMENT.finditer(text):
        body = m.group(1).strip()
        if body.startswith("results:"):
            for token in body[len("results:"):].split():
                names |= _expand(token, results)
    return names


def _expand(pattern: str, results: Path) -> set[str]:
    """file names matching a cited name: braces {a,b} and * globs; only files that exist."""
    m = re.search(r"\{([^}]*)\}", pattern)
    if m:
        out = set()
        for alt in m.group(1).split(","):
            out |= _expand(pattern[: m.start()] + alt + pattern[m.end():], results)
        return out
    return {p.relative_to(results).as_posix() for p in results.glob(pattern) if p.is_file()
            and not p.name.endswith(SUFFIX) and p.name not in NOT_RESULTS}


def numbers_of(block: Block) -> tuple[list[tuple[str, str]], set[str], bool]:
    """(sign, number) tokens checked in a block; its exempted numbers; whether the whole block is exempt."""
    exempt, whole = set(), False
    for m in COMMENT.finditer(block.text):
        body = m.group(1).strip()
        if body.startswith("not-from-a-run"):
            rest = body[len("not-from-a-run"):].lstrip(":").split()
            if rest:
                exempt |= set(rest)
            else:
                whole = True
    text = COMMENT.sub(" ", block.text)
    text = CODE_SPAN.sub(" ", text)
    text = LINK_TARGET.sub("]", text)
    text = URL.sub(" ", text)
    text = re.sub(r"\b\d+(\.\d+){2,}\b", " ", text)  # versions 2.14.1
    text = re.sub(r"\b(PyTorch|torch|Python|CUDA|diffusers|transformers|version)\s+\d+(\.\d+)*", " ", text)
    text = re.sub(r"\b(arXiv:?\s*)?\d{4}\.\d{4,5}(v\d+)?\b", " ", text)  # arXiv identifiers
    text = re.sub(r"\b(sha256|sha)\s+[0-9a-f.]+", " ", text)
    found = [(m.group(1), m.group(2)) for m in NUMBER.finditer(text)]
    return found, exempt, whole


def half_ulp(token: str) -> float:
    mant, _, exp = token.lower().partition("e")
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    return 0.5 * 10.0 ** (-decimals) * 10.0 ** (int(exp) if exp else 0)


_FILE_NUMBERS: dict[Path, list[float]] = {}


def file_numbers(path: Path) -> list[float]:
    if path not in _FILE_NUMBERS:
        vals = []
        if path.suffix.lower() in (".md", ".csv", ".json", ".txt", ".tsv"):
            for tok in FILE_NUMBER.findall(path.read_text(errors="replace")):
                try:
                    v = float(tok)
                except ValueError:
                    continue
                if math.isfinite(v):
                    vals.append(abs(v))
        _FILE_NUMBERS[path] = sorted(vals)
    return _FILE_NUMBERS[path]


def found_in(token: str, paths: list[Path]) -> bool:
    import bisect

    v, tol = abs(float(token)), half_ulp(token) * (1 + 1e-9) + 1e-12
    for p in paths:
        vals = file_numbers(p)
        i = bisect.bisect_left(vals, v - tol)
        if i < len(vals) and vals[i] <= v + tol:
            return True
    return False


def check_citations(docs: list[Path], results: Path, owners: dict[str, dict], report: Report, root: Path) -> int:
    """Rule 3. Returns the number of numbers checked."""
    checked = 0
    for doc in docs:
        name = doc.relative_to(root).as_posix() if doc.is_relative_to(root) else str(doc)
        inherited: set[str] = set()
        section = -1
        for block in blocks_of(doc.read_text(), name):
            if block.section != section:
                section, inherited = block.section, set()
            if block.kind == "heading":
                continue
            own = cited_names(block.text, results)
            if own:
                inherited = own
            cites = own or inherited
            tokens, exempt, whole = numbers_of(block)
            tokens = [(s, t) for s, t in tokens if t not in exempt and (s + t) not in exempt]
            if whole or not tokens:
                continue
            first = block.text.splitlines()[0].strip()[:70]
            if not cites:
                plain = COMMENT.sub(" ", CODE_SPAN.sub(" ", block.text))
                if MEASURE_WORDS.search(plain):
                    report.fail(f"{name}:{block.line}: numbers from a run ({', '.join(s + t for s, t in tokens[:6])}"
                                f"{' ...' if len(tokens) > 6 else ''}) cite no result file: \"{first}\"")
                continue
            group = set()
            for c in cites:
                if c.startswith("card:"):
                    continue
                rec = owners.get(c)
                group |= ({(rec["_dir"] / f).relative_to(results).as_posix() for f in rec["files"]} if rec else {c})
            paths = [results / g for g in sorted(group)]
            paths += [results.parents[1] / c[len("card:"):] for c in sorted(cites) if c.startswith("card:")]
            missing = []
            for sign, tok in tokens:
                checked += 1
                if found_in(tok, paths):
                    continue
                if sign:
                    report.derived.append(f"{name}:{block.line}: {sign}{tok} (not in {', '.join(sorted(cites))})")
                else:
                    missing.append(tok)
            if missing:
                report.fail(f"{name}:{block.line}: {', '.join(missing)} not in the cited "
                            f"{', '.join(sorted(cites))}: \"{first}\"")
    return checked


def default_docs(root: Path) -> list[Path]:
    docs = [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "experiments" / "results" / "README.md"]
    return [d for d in docs if d.is_file()]


def list_records(results: Path) -> str:
    lines = ["| result | files | commit | assets (sha256) | date (UTC) | wall | stale |", "|---|---|---|---|---|---|---|"]
    for path in sorted(results.rglob("*" + SUFFIX)):
        rec = json.loads(path.read_text())
        assets = ", ".join(f"{Path(a).name} {d[:8]}" for a, d in rec["assets"].items()) or "none"
        commits = ", ".join(c[:7] for c in rec.get("commits") or [rec["commit"]] if c)
        lines.append(f"| {path.name[:-len(SUFFIX)]} | {', '.join(sorted(rec['files']))} | {commits}"
                     f"{' (dirty)' if rec.get('dirty') else ''} | {assets} | {rec['started'][:10]} | "
                     f"{rec['wall_s'] / 60:.1f} min | {rec.get('stale') or ''} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--root", type=Path, default=ROOT, help="where the recorded asset paths are resolved")
    p.add_argument("--docs", type=Path, nargs="*", default=None, help="default: README.md, docs/*.md, "
                   "experiments/results/README.md")
    p.add_argument("--no-citations", action="store_true", help="rules 1-2 only")
    p.add_argument("--list", action="store_true", help="print every record")
    p.add_argument("--verbose", action="store_true", help="also list derived numbers")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    report = Report()
    results, root = args.results.resolve(), args.root.resolve()
    owners = check_provenance(results, root, report)
    checked = 0
    if not args.no_citations:
        docs = [d.resolve() for d in args.docs] if args.docs is not None else default_docs(root)
        checked = check_citations(docs, results, owners, report, root)
    if args.list:
        print(list_records(results))
    for s in report.stale:
        print(f"STALE (accepted) {s}")
    if args.verbose:
        for d in report.derived:
            print(f"derived (not checked) {d}")
    for f in report.failures:
        print(f"FAIL {f}")
    n_files = len(result_files(results))
    print(f"check-results: {n_files} result files, {len(set(id(r) for r in owners.values()))} records, "
          f"{checked} cited numbers checked, {len(report.stale)} stale, {len(report.failures)} failure(s) "
          f"({time.perf_counter() - t0:.1f} s)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
