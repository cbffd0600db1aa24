"""The README and the pages of docs/: every command they show exists, and every relative link arrives.

A ``brats-keras ...`` command (in a code block or in inline code; also ``python -m brats_keras.cli`` and
``python data_prep/convert.py``) must name a real sub-command and only flags that sub-command takes, read
from :func:`brats_keras.cli.build_parser`. Inline code such as ```crossval --combine``` that starts with a
sub-command's name and carries flags is checked the same way. A relative link must reach a file, and a
heading of that file when it names one (``page.md#heading``).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from brats_keras.cli import add_convert_args, build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "notebooks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
PROGRAM = re.compile(r"(?<![\w./-])(brats-keras|python -m brats_keras\.cli|python data_prep/convert\.py)(?![\w.\-\[/])")
SUBSTITUTION = re.compile(r"\$\(\(.*?\)\)|\$\([^)]*\)")  # $((K + 1)), $(cmd): one word
SHELL_END = {"&&", "||", "|", ";", ">", ">>", "2>", "do", "then"}
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|[A-Z_]+")  # <command>, ..., COMMAND
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
#: pages about one sub-command: there a bare flag in inline code (`--lr`) is one of its flags
PAGE_SUBCOMMAND = {"training.md": "train", "converting.md": "convert", "scoring.md": "evaluate"}


def cli_options() -> tuple[set[str], dict[str, set[str]]]:
    """The options of ``brats-keras`` itself and those of each sub-command, as the parser defines them."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    top = {s for a in parser._actions for s in a.option_strings}
    subs = {name: {s for a in sub._actions for s in a.option_strings} for name, sub in subparsers.choices.items()}
    return top, subs


def convert_script_options() -> set[str]:
    parser = argparse.ArgumentParser()
    add_convert_args(parser)
    return {s for a in parser._actions for s in a.option_strings}


def _strip_fences(text: str) -> str:
    return FENCE.sub("", text)


def snippets(text: str) -> list[str]:
    """The shell text a page shows: each line of its code blocks (continuation lines joined) and each inline
    code span outside them."""
    out = []
    for block in FENCE.findall(text):
        out += re.sub(r"\\\n", " ", block).splitlines()
    out += INLINE.findall(_strip_fences(text))
    return out


def _words(rest: str) -> list[str]:
    """The words of one command: up to the end of the shell command, a comment, a closing quote or a comma."""
    words = []
    for word in rest.split():
        if word in SHELL_END or word.startswith("#"):
            break
        stripped = word.rstrip(";'\"),")
        if stripped:
            words.append(stripped)
        if stripped != word:
            break
    return words


def commands(snippet: str, subcommands) -> list[tuple[str, list[str]]]:
    """``(program, words)`` for every command in a snippet; program is "brats-keras" or "convert.py"."""
    snippet = SUBSTITUTION.sub("X", snippet)
    found = [("convert.py" if m.group(1).endswith("convert.py") else "brats-keras", _words(snippet[m.end():]))
             for m in PROGRAM.finditer(snippet)]
    words = snippet.split()
    if not found and words and words[0] in subcommands and any(w.startswith("--") for w in words[1:]):
        found.append(("brats-keras", _words(snippet)))  # inline `crossval --combine A B`
    return found


def problems(program: str, words: list[str], top: set[str], subs: dict[str, set[str]]) -> list[str]:
    """What is wrong with one command: an unknown sub-command, or flags its sub-command does not take."""
    bad = []
    if program == "convert.py":
        allowed, flags = convert_script_options(), words
    else:
        i = 0
        while i < len(words) and words[i].startswith("-"):
            if words[i] not in top:
                bad.append(f"{words[i]} is not an option of brats-keras")
            i += 1
        if i == len(words) or PLACEHOLDER.fullmatch(words[i]):  # the program named alone, or `<command>`
            return bad
        if words[i] not in subs:
            return bad + [f"{words[i]!r} is not a sub-command of brats-keras"]
        program, allowed, flags = f"brats-keras {words[i]}", subs[words[i]], words[i + 1:]
    return bad + [f"{program} has no option {name}" for name in (w.split("=", 1)[0] for w in flags)
                  if re.match(r"--?[A-Za-z]", name) and name not in allowed]


def page_problems(text: str, subcommand: str | None = None) -> tuple[list[str], set[str]]:
    """The problems of every command on a page, and the sub-commands its commands use; with ``subcommand``,
    also of the bare flags in its inline code (`--lr 3e-4`)."""
    top, subs = cli_options()
    bad, used = [], set()
    if subcommand:
        for span in INLINE.findall(_strip_fences(text)):
            if span.startswith("--"):
                bad += [f"{p}: `{span}`" for p in problems("brats-keras", [subcommand, *_words(span)], top, subs)]
    for snippet in snippets(text):
        for program, words in commands(snippet, subs):
            found = problems(program, words, top, subs)
            bad += [f"{p}: `{snippet.strip()}`" for p in found]
            named = [w for w in words if not w.startswith("-")][:1]
            if program == "brats-keras" and named and named[0] in subs:
                used.add(named[0])
    return bad, used


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _strip_fences(path.read_text())
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def link_problems(page: Path, text: str) -> list[str]:
    bad = []
    for target in LINK.findall(INLINE.sub("", _strip_fences(text))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            bad.append(f"{target}: no file {file}")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            bad.append(f"{target}: no heading #{anchor} in {file.name}")
    return bad


# ----------------------------------------------------------------------------- the pages
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_shown_names_a_real_subcommand_and_real_flags(page):
    bad, _ = page_problems(page.read_text(), PAGE_SUBCOMMAND.get(page.name))
    assert not bad, f"{page.relative_to(ROOT)}:\n" + "\n".join(bad)


def test_every_subcommand_is_shown_somewhere():
    """Non-vacuous: the pages do show commands, and each sub-command at least once."""
    used = set()
    for page in PAGES:
        used |= page_problems(page.read_text())[1]
    assert used == set(cli_options()[1])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file(page):
    bad = link_problems(page, page.read_text())
    assert not bad, f"{page.relative_to(ROOT)}:\n" + "\n".join(bad)


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_the_cli_docstring_and_the_library_page_name_every_subcommand():
    import brats_keras.cli

    subcommands = set(cli_options()[1])
    listed = re.search(r"Sub-commands: (.*?)\.", brats_keras.cli.__doc__, re.S).group(1)
    assert set(re.split(r",\s*", listed.strip())) == subcommands
    row = next(line for line in (ROOT / "docs" / "library.md").read_text().splitlines()
               if "| `brats_keras.cli` |" in line)
    assert set(re.findall(r"`([a-z-]+)`", row.split("command:", 1)[1])) == subcommands


def test_the_paired_interval_quoted_for_the_shipped_post_processing_is_the_codes():
    """docs/crossval.md quotes the paired test on the TC threshold 0.4 chosen for stage 1 of the shipped ensemble:
    recomputed here from the model card's per-case Dice of stage 1 with the rule's own confidence and resamples."""
    import json

    import numpy as np

    from brats_keras.postprocessing import PAIRED_CONFIDENCE, paired_interval

    card = json.loads((ROOT / "brats_keras" / "pretrained" / "model_card.json").read_text())
    before, after = card["stage1"]["crossval_dice"], card["stage1"]["crossval_postprocessed_dice"]
    gain = np.array([after[c]["TC"] - before[c]["TC"] for c in sorted(before)])
    low, high = paired_interval(gain)
    stated = (f"helped {(gain > 0).sum()} cases and hurt {(gain < 0).sum()}: "
              f"{PAIRED_CONFIDENCE:.0%} interval {low:.3f}..{high:+.3f}")
    assert stated in " ".join((ROOT / "docs" / "crossval.md").read_text().split())


# ----------------------------------------------------------------------------- the checks themselves
@pytest.mark.parametrize("text, expected", [
    ("```bash\nbrats-keras train --data d --made-up-flag 3\n```", "brats-keras train has no option --made-up-flag"),
    ("```bash\nbrats-keras train --data d \\\n    --epochs 3 --made-up-flag\n```",
     "brats-keras train has no option --made-up-flag"),  # on a continuation line
    ("Run `brats-keras predict --epochs 3` here.", "brats-keras predict has no option --epochs"),  # another's flag
    ("Run `brats-keras predikt --model m`.", "'predikt' is not a sub-command"),
    ("With `crossval --combine A B --made-up`.", "brats-keras crossval has no option --made-up"),
    ("```bash\nfor k in 0 1; do\n  brats-keras train --fold $k --folds 2 --made-up\ndone\n```",
     "brats-keras train has no option --made-up"),
    ("```bash\nsrun bash -c 'brats-keras convert --output p/$((K + 1)) --made-up x'\n```",
     "brats-keras convert has no option --made-up"),
    ("```bash\npython data_prep/convert.py --input a --output b --made-up\n```", "convert.py has no option --made-up"),
    ("```bash\nbrats-keras --made-up train\n```", "--made-up is not an option of brats-keras"),
])
def test_a_made_up_flag_or_subcommand_is_caught(text, expected):
    bad, _ = page_problems(text)
    assert len(bad) == 1 and expected in bad[0], bad


def test_a_bare_flag_on_a_page_about_one_subcommand_is_checked():
    text = "Flags: `--lr 3e-4`, `--resume RUN`, `--made-up N`, `brats-keras predict --tta`."
    assert page_problems(text, "train")[0] == ["brats-keras train has no option --made-up: `--made-up N`"]
    assert page_problems(text)[0] == []  # elsewhere a bare flag belongs to no command in particular


@pytest.mark.parametrize("text", [
    "```bash\nbrats-keras train --data d --out r \\\n    --epochs 3 --fold $k --folds 5  # a comment --not-a-flag\n```",
    "```bash\nbrats-keras ensemble --runs a/fold0 ... a/fold4 --out f && brats-keras predict --model f --tta\n```",
    "`brats-keras --verbose <command>` shows them; the `brats-keras` command; `brats-keras.json`",
    "`predict --model DIR`, `export --format savedmodel\\|onnx`, `--shard K/N`, `pip install brats-keras[onnx]`",
])
def test_real_commands_pass(text):
    assert page_problems(text)[0] == []


def test_a_broken_link_or_heading_is_caught(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section: here\n")
    page = tmp_path / "page.md"
    text = ("[ok](other.md) [ok](other.md#a-section-here) [ok](#top) [web](https://example.org/x.md)\n"
            "[missing](nothere.md) [no heading](other.md#nope) `[not a link](nothere2.md)`\n\n# Top\n"
            "```\n[inside a code block](nothere3.md)\n```\n")
    page.write_text(text)
    assert link_problems(page, text) == [f"nothere.md: no file {tmp_path / 'nothere.md'}",
                                         "other.md#nope: no heading #nope in other.md"]


def test_the_library_page_names_every_module_of_the_package():
    """docs/library.md has a row for every module and package directly under brats_keras/."""
    import pkgutil

    import brats_keras

    text = (ROOT / "docs" / "library.md").read_text()
    modules = [m.name for m in pkgutil.iter_modules(brats_keras.__path__)]
    missing = [m for m in modules if f"`brats_keras.{m}`" not in text]
    assert len(modules) > 25 and not missing, missing
