"""Event positions (REP-1): `<entry id>.<scope tag>`.

The entry id orders events within the scope (the relay's append order); the tag is a hash
of the scope, so a position names its scope and a `since` from another scope is refused
rather than mistaken for a place in this one (REP-4). Clients treat the whole as opaque."""

from __future__ import annotations

import hashlib
import re

# ASCII digits only, and the whole string: `\d` would take Arabic-Indic digits, and `$` a
# trailing newline (REP-5: such a string was never given out, so it is no position).
_ENTRY = re.compile(r"([0-9]{1,20})-([0-9]{1,20})", re.ASCII)
_TAG = re.compile(r"[0-9a-f]{12}", re.ASCII)


class BadPosition(ValueError):
    """Not a position at all: `subscribe_error invalid payload` (REP-5)."""


def scope_tag(scope_type: str, scope_id: str) -> str:
    return hashlib.blake2b(f"{scope_type}\0{scope_id}".encode(), digest_size=6).hexdigest()


def encode(scope_type: str, scope_id: str, entry_id: str) -> str:
    return f"{entry_id}.{scope_tag(scope_type, scope_id)}"


def decode(pos: object, scope_type: str, scope_id: str) -> tuple[int, int] | None:
    """The (ms, seq) entry id of a position of this scope; None for a well-formed position of
    another scope. Raises BadPosition when `pos` is not a position."""
    if not isinstance(pos, str):
        raise BadPosition("since must be a string")
    entry, _, tag = pos.rpartition(".")
    m = _ENTRY.fullmatch(entry)
    if m is None or _TAG.fullmatch(tag) is None:
        raise BadPosition("since is not a position")
    if tag != scope_tag(scope_type, scope_id):
        return None
    return int(m.group(1)), int(m.group(2))


def entry_str(entry: tuple[int, int]) -> str:
    return f"{entry[0]}-{entry[1]}"


def parse_entry(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
