"""The project's text, checked: the README's length, every relative link in the README, docs/,
results/ and pretrained/ resolves (anchors too), every command in a fenced block of those pages names a tool that exists and only flags its --help lists, and the text speaks to users
(no work-diary words: see `DIARY`)."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250

LINKED_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                *sorted((ROOT / "results").rglob("*.md")), ROOT / "pretrained" / "README.md"]
COMMAND_PAGES = LINKED_PAGES

# words of a lab notebook, not of a user guide: a work session, an issue tracker's number
DIARY = re.compile(r"\bsessions?\b|\bissues?\s*#?\s*\d+|#\d{1,4}\b(?=[\s).,;:]|$)", re.I)
TEXT_SUFFIXES = {".md", ".py", ".sh", ".yaml", ".yml", ".json", ".txt", ".cfg", ".toml", ".csv", ""}
TEXT_PLACES = ["README.md", "setup.py", "docs", "results", "pretrained", "experiments", "ebm_vae",
               "tools", "bench", "tests", "data", ".ci"]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
COMMAND_FENCES = {"", "bash", "sh", "shell", "console"}
# commands a reader runs that are not the project's own files
EXTERNAL = {"pip", "git", "cd", "export", "for", "do", "done", "visualdl", "source", "mkdir",
            "timeout", "cmp", "ls"}


def _text_files() -> list[Path]:
    files = []
    for place in TEXT_PLACES:
        path = ROOT / place
        candidates = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        files += [f for f in candidates if f.is_file() and f.suffix in TEXT_SUFFIXES
                  and "__pycache__" not in f.parts and f.stat().st_size < 2_000_000]
    return [f for f in files if f.resolve() != Path(__file__).resolve()]


def diary_words(text: str) -> list[str]:
    return [m.group(0) for m in DIARY.finditer(text)]


def test_diary_words_are_found():
    assert diary_words("as the fourth Session showed (issue 19, issue #20)") == [
        "Session", "issue 19", "issue #20"]
    assert diary_words("see #12.") == ["#12"]
    assert diary_words("a session-long run") == ["session"]
    assert diary_words("the issues of FID; obsession; #!/bin/bash; # 2,000 images; §8") == []


def test_no_diary_words_in_the_project_text():
    found = {}
    for f in _text_files():
        words = diary_words(f.read_text(errors="ignore"))
        if words:
            found[str(f.relative_to(ROOT))] = sorted(set(words))[:5]
    assert not found, f"say it as a plain statement, not as a session or an issue number: {found}"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(page: Path) -> frozenset[str]:
    text = FENCE.sub("", page.read_text())
    return frozenset(slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.M))


def broken_links(page: Path) -> list[str]:
    bad = []
    text = FENCE.sub("", page.read_text())
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no heading #{anchor})")
    return bad


def test_the_link_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Top\n[a](p.md#top) [b](nope.md) [c](p.md#nowhere) [d](https://x.org)\n")
    assert broken_links(page) == ["nope.md (no such file)", "p.md#nowhere (no heading #nowhere)"]


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def commands(text: str) -> list[tuple[bool, str]]:
    """(from a shell fence, command line) of each fenced block; backslash continuations and
    indented `[...]` / `--...` synopsis lines joined, comments dropped."""
    out = []
    for lang, body in FENCE.findall(text):
        if lang not in COMMAND_FENCES:
            continue
        body = re.sub(r"\\\n", " ", body)
        lines: list[str] = []
        for line in body.splitlines():
            if lines and re.match(r"\s+(\[|--)", line):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line)
        for line in lines:
            line = " ".join(re.sub(r"(^|\s)#.*$", "", line).split())
            if line:
                out.append((lang != "", line))
    return out


def _segments(line: str) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    segments, current = [], []
    try:
        tokens = list(lexer)
    except ValueError:  # an apostrophe in a listing that is not a command
        tokens = line.split()
    for token in tokens:
        if token and set(token) <= set(";&|"):
            segments.append(current)
            current = []
        else:
            current.append(token)
    return [s for s in segments + [current] if s]


@lru_cache(maxsize=None)
def tool_help(script: str, sub: str | None) -> str:
    """The --help text of tools/<script> (of its subcommand `sub`), run in-process."""
    spec = importlib.util.spec_from_file_location(f"_doc_tool_{Path(script).stem}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        module.main([sub, "--help"] if sub else ["--help"])
    return buf.getvalue()


def check_command(tokens: list[str], shell: bool) -> list[str]:
    """What is wrong with one command: a tool that does not exist, a flag its --help lacks."""
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
        tokens = tokens[1:]  # VAR=value prefixes
    if not tokens:
        return []
    head = tokens[0]
    if head in EXTERNAL:
        return []
    if head == "bash":
        return [] if (ROOT / tokens[1]).is_file() else [f"no script {tokens[1]}"]
    if head not in ("python", "python3"):
        return [f"unknown command {head}"] if shell else []
    scripts = [i for i, t in enumerate(tokens) if t.endswith(".py") and "/" in t]
    if not scripts:
        return []  # python -c ..., python -m pytest ...
    i = scripts[0]
    if not (ROOT / tokens[i]).is_file():
        return [f"no script {tokens[i]}"]
    if not tokens[i].startswith("tools/"):
        return []
    rest = [t.strip("[]") for t in tokens[i + 1:]]
    sub = rest[0] if tokens[i] == "tools/complete.py" and rest and not rest[0].startswith("-") else None
    known = set(re.findall(r"--[a-z][a-z0-9-]*", tool_help(tokens[i], sub)))
    flags = {t.split("=")[0] for t in rest if re.match(r"--[a-z]", t)}
    return [f"{tokens[i]}{' ' + sub if sub else ''}: {f} not in --help" for f in sorted(flags - known)]


def test_the_command_checker_sees_a_bad_command():
    assert check_command(shlex.split("python tools/train.py --max-iters 3 --no-such-flag"),
                         True) == ["tools/train.py: --no-such-flag not in --help"]
    assert check_command(["python", "tools/nope.py"], True) == ["no script tools/nope.py"]
    assert check_command(["frobnicate", "-x"], True) == ["unknown command frobnicate"]
    assert check_command(shlex.split("python tools/complete.py fill --ckpt R --image a.png "
                                     "--mask m.png --out o.png --samples 4"), True) == []
    assert commands("```bash\npython a.py \\\n  --x 1   # note\n```\n") == [(True, "python a.py --x 1")]


@pytest.mark.parametrize("page", COMMAND_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_fenced_commands_name_existing_tools_and_flags(page):
    problems = [f"{line}: {p}" for shell, line in commands(page.read_text())
                for tokens in _segments(line) for p in check_command(tokens, shell)]
    assert problems == []
