"""Counters behind /health/realtime (HL-1), in the spirit of Multica's realtime.Metrics."""

from __future__ import annotations

from collections import Counter

# Counters per scope type know these types; anything else a client names is counted as "other",
# so that made-up scope names cannot grow the node's memory or the health answer (HL-1).
SCOPE_TYPES = frozenset(("workspace", "user", "task", "chat", "global"))


class ScopeCounter(Counter):
    def bump(self, scope_type: str) -> None:
        self[scope_type if scope_type in SCOPE_TYPES else "other"] += 1


class Metrics:
    def __init__(self) -> None:
        self.active_connections = 0
        self.connects = 0
        self.disconnects = 0
        self.messages_sent = 0
        self.messages_dropped = 0
        self.slow_evictions = 0
        self.inbound_too_large = 0
        self.auth_failures = 0
        self.connections_refused = 0  # over the connection cap
        self.header_timeouts = 0
        self.subscribes = ScopeCounter()
        self.subscribe_denied = ScopeCounter()
        self.events_sent_by_type: Counter[str] = Counter()

    def snapshot(self) -> dict:
        return {
            "active_connections": self.active_connections,
            "connects_total": self.connects,
            "disconnects_total": self.disconnects,
            "messages_sent_total": self.messages_sent,
            "messages_dropped_total": self.messages_dropped,
            "slow_evictions_total": self.slow_evictions,
            "inbound_too_large_total": self.inbound_too_large,
            "auth_failures_total": self.auth_failures,
            "connections_refused_total": self.connections_refused,
            "header_timeouts_total": self.header_timeouts,
            "subscribes_total": dict(self.subscribes),
            "subscribe_denied_total": dict(self.subscribe_denied),
            "events_sent_by_type": dict(self.events_sent_by_type),
        }
