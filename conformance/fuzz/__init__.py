"""The fuzzer: generated inbound traffic thrown at a target's nodes, every answer judged by the
contract (docs/protocol.md), while a canary subscriber counts its deliveries.

* `gen`: hypothesis strategies for sessions (an opening, batches of inbound messages and raw
  protocol oddities, an ending), drawn deterministically from a seed;
* `wire`: how a session's steps become bytes on a raw RFC 6455 connection (conformance/rawws.py),
  and a reader that sorts what comes back into answers, events and the close;
* `oracle`: what the contract lets a target answer to one inbound message;
* `judge`: findings (kind, requirement IDs, one example) and how a batch's answers and a close
  are judged against the oracle's expectations;
* `canary`: a subscriber on one node and a steady publisher on another (DEL-1, DEL-2);
* `runner`: parallel lanes of sessions across the nodes, bounded in frames and time.

`scopehub fuzz` (scopehub/cmd_fuzz.py) drives it; docs/fuzz.md explains it."""
