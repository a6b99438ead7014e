"""scopehub reference server: a minimal, correct implementation of the realtime fanout contract."""

IMPLEMENTATION = "scopehub-reference"
VERSION = "0.1.0"
