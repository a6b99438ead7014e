"""What a frame from the server is, by the contract: an answer to something the client sent, or
an event. The suite waits for answers and tracks events; everything else the contract lets
arrive in between (events before `auth_ack` (HS-6), events of other scopes, `global` events of
cases running alongside) is recorded and skipped, never taken for the answer."""

from __future__ import annotations

from typing import Any

ANSWER_TYPES = frozenset({"auth_ack", "pong", "subscribe_ack", "subscribe_error", "unsubscribe_ack",
                          "unsubscribe_error"})


def is_event(frame: Any) -> bool:
    return isinstance(frame, dict) and "event_id" in frame


def is_answer(frame: Any) -> bool:
    """An answer frame: one of the answer types, or an error frame ({"error": ...}; extra fields
    allowed). Event frames are never answers, whatever their type."""
    if not isinstance(frame, dict) or "event_id" in frame:
        return False
    return frame.get("type") in ANSWER_TYPES or "error" in frame


def is_auth_answer(frame: Any) -> bool:
    """What ends token auth: auth_ack or an error frame."""
    return is_answer(frame) and (frame.get("type") == "auth_ack" or "error" in frame)


def answers_to(frame: Any, kind: str, scope: Any, id_: Any) -> bool:
    """The subscribe/unsubscribe answer (ack or error) for this scope and id."""
    if not is_answer(frame) or frame.get("type") not in (f"{kind}_ack", f"{kind}_error"):
        return False
    payload = frame.get("payload")
    return isinstance(payload, dict) and payload.get("scope") == scope and payload.get("id") == id_
