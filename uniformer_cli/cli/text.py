"""Text from files and users (labels, metadata, file names, error messages) as it is shown to people.

`escape` is the one way such text reaches the terminal: every `error:` line, log line, progress bar and
table cell goes through it. Control characters would otherwise act on the terminal (ESC starts escape
sequences that recolour, move the cursor or clear the screen; BEL rings), a newline would split an
`error:` line in two, bidirectional overrides would reorder what is read, and the undecodable bytes of a
non-UTF-8 file name (kept by Python as lone surrogates) would fail to print at all. Each is written as a
visible escape instead: `\\x1b`, `\\n`, `\\u202e`, and `\\xe9` for the byte 0xE9 of a file name. JSON and
the files a command writes keep the exact strings (`cli.output`).
"""

from __future__ import annotations

import re

from rich.markup import escape as escape_markup

# C0 and C1 controls and DEL; the bidirectional controls (the "Trojan Source" characters); lone surrogates.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    character = match[0]
    code = ord(character)
    if character in _NAMED:
        return _NAMED[character]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as `os.fsdecode` keeps it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: object) -> str:
    """`str(text)` with every control, bidirectional and undecodable character as a visible escape: one
    line, harmless to a terminal, printable in any encoding."""
    return _INVISIBLE.sub(_escaped, str(text))


# A "[" that opens no tag but follows a backslash: rich reads "\\[" in plain text as an escaped bracket
# and drops the backslash, so one more is written.
_BACKSLASH_BRACKET = re.compile(r"\\(?=\[(?![a-z#/@][^[]*?\]))")


def escape(text: object) -> str:
    """`visible(text)`, also escaped for rich markup (paths and Something-Something labels hold [brackets]
    that rich would read as styles): what a console prints exactly as the text reads. Consoles are made
    with `emoji=False`, so `:smile:` in a label stays as it is."""
    return _BACKSLASH_BRACKET.sub(r"\\\\", escape_markup(visible(text)))
