"""The conformance suite: black-box checks of a target's nodes against docs/protocol.md."""
