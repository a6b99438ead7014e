"""scopehub: conformance suite, simulator and reference server for realtime WebSocket fanout."""
