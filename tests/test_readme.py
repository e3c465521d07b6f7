"""README.md's command lines match the CLI: each is parsed by the real argparse parser.

Two kinds of lines: the concrete commands of the ``sh`` blocks, parsed as written, and
the synopses of the command table (backticked, starting with ``heliostat``), expanded
first — ``[...]`` optional, ``(a | b)`` and ``x|y|z`` alternatives — into every command
line they stand for. A placeholder (``N``, ``W H``) in the place of a number becomes
``1``. Nothing is executed: parsing catches unknown options, missing required ones,
wrong choices and options of another command.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
from pathlib import Path

import pytest

from heliostat.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


# --------------------------------------------------------------------------- extraction
def sh_commands(text: str) -> list[str]:
    """``heliostat ...`` lines of the ``sh`` code blocks (continuations joined, comments
    and a trailing ``&`` dropped)."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip().rstrip("&").strip()
            line = re.sub(r"^\.venv/bin/", "", line.split("&& ")[-1])
            if line.startswith("heliostat "):
                out.append(line)
    return out


def synopses(text: str) -> list[str]:
    """Backticked ``heliostat ...`` synopses of the command table's first column."""
    out = []
    for row in text.splitlines():
        if row.startswith("| `heliostat "):
            first = re.split(r"(?<!\\)\|", row)[1]  # the first cell (escaped pipes kept)
            out += [m for m in re.findall(r"`([^`]+)`", first) if m.startswith("heliostat ")]
    return out


# --------------------------------------------------------------------------- expansion
def _tokens(synopsis: str) -> list[str]:
    s = synopsis.replace("\\|", "|")
    out, quote = [], ""
    for ch in s:  # brackets become tokens of their own (outside quotes)
        if ch == '"':
            quote = "" if quote else ch
        out.append(f" {ch} " if ch in "[]()" and not quote else ch)
    return shlex.split("".join(out))


def _parse(tokens: list[str], i: int = 0, end: str = "") -> tuple[list, int]:
    """Tokens to a tree: a sequence of str, ("opt", seq) and ("alt", [seq, ...])."""
    alts, seq = [], []
    while i < len(tokens):
        t = tokens[i]
        if t in ("[", "("):
            sub, i = _parse(tokens, i + 1, "]" if t == "[" else ")")
            seq.append(("opt", sub) if t == "[" else sub)
            continue
        if t == end:
            alts.append(seq)
            return (("alt", alts) if len(alts) > 1 else seq), i + 1
        if t == "|":
            alts.append(seq)
            seq = []
        elif "|" in t and not t.startswith("-"):
            seq.append(("alt", [[a] for a in t.split("|")]))
        elif "|" in t:  # an option's value alternatives: --method a|b|c
            seq.append(("alt", [[a] for a in t.split("|")]))
        else:
            seq.append(t)
        i += 1
    alts.append(seq)
    return (("alt", alts) if len(alts) > 1 else seq), i


def _expand(node) -> list[list[str]]:
    if isinstance(node, str):
        return [[node]]
    if isinstance(node, tuple) and node[0] == "opt":
        return [[], *_expand(node[1])]
    if isinstance(node, tuple) and node[0] == "alt":
        return [v for alt in node[1] for v in _expand(alt)]
    parts = [_expand(n) for n in node]
    return [list(itertools.chain.from_iterable(c)) for c in itertools.product(*parts)]


def expand(synopsis: str) -> list[list[str]]:
    """Every argv a synopsis stands for (without the leading ``heliostat``)."""
    tree, _ = _parse(_tokens(synopsis))
    return [argv[1:] for argv in _expand(tree)]


# --------------------------------------------------------------------------- parsing
class ParseError(Exception):
    pass


def _leaf(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser that takes the options of ``argv``."""
    for tok in argv:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or tok not in subs[0].choices:
            return parser
        parser = subs[0].choices[tok]
    return parser


def _numbers_for_placeholders(parser, argv: list[str]) -> list[str]:
    """Placeholders where an option takes numbers (``--address N``) become ``1``."""
    opts = {o: a for a in _leaf(parser, argv)._actions for o in a.option_strings}
    out = list(argv)
    for i, tok in enumerate(argv):
        a = opts.get(tok)
        if a is None or a.type not in (int, float):
            continue
        n = a.nargs if isinstance(a.nargs, int) else 1
        for j in range(i + 1, min(i + 1 + n, len(out))):
            try:
                a.type(out[j])
            except ValueError:
                out[j] = "1"
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()

    def error(self, message):  # argparse would print and exit
        raise ParseError(f"{self.prog}: {message}")

    orig = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = error
    try:
        return parser.parse_args(_numbers_for_placeholders(parser, argv))
    finally:
        argparse.ArgumentParser.error = orig


TEXT = README.read_text(encoding="utf-8")


def test_the_readme_has_command_lines_to_check():
    assert len(sh_commands(TEXT)) >= 6 and len(synopses(TEXT)) >= 15


@pytest.mark.parametrize("line", sh_commands(TEXT))
def test_sh_command_parses(line):
    args = parse(shlex.split(line)[1:])
    assert callable(args.func)


@pytest.mark.parametrize("synopsis", synopses(TEXT))
def test_synopsis_parses_in_every_form(synopsis):
    forms = expand(synopsis)
    assert forms
    for argv in forms:
        try:
            args = parse(argv)
        except ParseError as exc:
            raise AssertionError(f"README: `{synopsis}` as {' '.join(argv)!r}: {exc}") from None
        assert callable(args.func), argv


def test_expansion_covers_options_and_alternatives():
    forms = expand('heliostat x a|b (--p P | --q "1 2" Q) [--r]')
    assert ["x", "a", "--p", "P"] in forms and ["x", "b", "--q", "1 2", "Q", "--r"] in forms
    assert len(forms) == 2 * 2 * 2
