"""Text from users and files made safe to show or store: credentials masked, control
characters (terminal escape sequences among them) made visible instead of obeyed.

``mask_credentials`` is the one function that hides a password in a URL, whatever state
the URL is in (one that does not parse included): every message, table and results file
that can carry a URL goes through it. ``printable`` is what the CLI's printing helper
(``cli/common.py: shown``) applies before escaping Rich markup.
"""

from __future__ import annotations

import re
import unicodedata

MASK = "***"
# scheme://user:PASSWORD@host... : everything between the first ':' of the user part and
# the last '@' of the same token is hidden, so that a password holding ':', '/' or '@'
# is hidden whole (a path holding '@' is hidden too: more than needed, never less).
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)[^\s'\"]*@")
# ...?password=SECRET&... and the like in a URL's query or a driver's keyword list.
_QUERY = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key)=([^\s&;'\"]+)")


def mask_credentials(text: str) -> str:
    """``text`` with every URL password (user-info or query) replaced by ``***``."""
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", str(text))
    return _QUERY.sub(lambda m: f"{m.group(1)}={MASK}", text)


def printable(text: str, *, newlines: bool = False) -> str:
    r"""``text`` with control and format characters shown as escapes (``\x1b``,
    ``\u202e``) instead of reaching the terminal; ``newlines`` keeps line breaks."""
    out = []
    for ch in str(text):
        if newlines and ch == "\n":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def safe_text(text: object, *, newlines: bool = False) -> str:
    """Credentials masked, then control characters made visible (no markup escaping)."""
    return printable(mask_credentials(str(text)), newlines=newlines)
