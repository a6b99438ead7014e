"""Counters behind /health/realtime (HL-1), in the spirit of Multica's realtime.Metrics."""

from __future__ import annotations

from collections import Counter


class Metrics:
    def __init__(self) -> None:
        self.active_connections = 0
        self.connects = 0
        self.disconnects = 0
        self.messages_sent = 0
        self.messages_dropped = 0
        self.slow_evictions = 0
        self.inbound_too_large = 0
        self.subscribes: Counter[str] = Counter()
        self.subscribe_denied: Counter[str] = Counter()
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
            "subscribes_total": dict(self.subscribes),
            "subscribe_denied_total": dict(self.subscribe_denied),
            "events_sent_by_type": dict(self.events_sent_by_type),
        }
