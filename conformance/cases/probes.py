"""Probes: run before every other case, they find out whether the target has what most checks
rely on, so that a missing basic is reported once, at its root, and the checks built on it say
`not checked: depends on ...` instead of failing one after another.

* `event_id`: every delivered frame carries the event_id its publish answered (EV-2); the cases
  find their events by it.
* `given_event_id`: an event_id given in the published frame is kept (EV-2); the exploration
  publishes its own, so that even a publish that timed out can be attributed.
* `pos` (with `resume` claimed): every frame carries the pos its publish answered (REP-1);
  every resume hands one back as `since`."""

from __future__ import annotations

import secrets

from ..cases import case
from ..frames import is_event


def _probe(nonce: str):
    return lambda f: isinstance(f, dict) and isinstance(f.get("payload"), dict) and f["payload"].get("probe") == nonce


@case("EV-2", "REP-1", first=True, title="probe: delivered frames carry the event_id (and, with resume, the pos) "
      "their publish answered; a given event_id is kept",
      cites={"EV-2": "A delivered frame is the published object plus `event_id`",
             "REP-1": "Every event frame carries `scope`, `scope_id` and `pos`"})
async def probe_event_ids_and_positions(ctx):
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    nonce = secrets.token_hex(8)
    published = await ctx.publish("workspace", w.ws_a, {"type": "conformance:probe", "payload": {"probe": nonce}})
    # found by its payload, not its event_id: this is where a missing event_id shows
    frame = await ctx.frame(alice, _probe(nonce), "the probe event (found by its payload)", req="DEL-1")
    has_id = is_event(frame) and frame.get("event_id") == published["event_id"]
    ctx.target.facts["event_id"] = (has_id, "EV-2: delivered frames do not carry the event_id their publish "
                                            "answered, and the suite finds its events by it")
    ctx.check("EV-2", has_id, "the delivered frame must carry the event_id its publish answered",
              {"event_id": published["event_id"]}, frame)
    if "resume" in ctx.target.capabilities:
        pos = published.get("pos")
        ok = isinstance(pos, str) and pos != "" and isinstance(frame, dict) and frame.get("pos") == pos
        ctx.target.facts["pos"] = (ok, "REP-1: frames or publish answers carry no pos, and every resume hands "
                                       "one back")
        ctx.check("REP-1", ok, "with resume claimed, the publish answer and the frame must carry the same string "
                  "pos", {"publish pos": "a string", "frame pos": "the same"},
                  {"publish pos": pos, "frame pos": frame.get("pos") if isinstance(frame, dict) else None})
    given, nonce = f"conformance-probe-{secrets.token_hex(8)}", secrets.token_hex(8)
    answer = await ctx.publish("workspace", w.ws_a, {"type": "conformance:probe", "event_id": given,
                                                     "payload": {"probe": nonce}})
    frame = await ctx.frame(alice, _probe(nonce), "the second probe event (found by its payload)", req="DEL-1")
    kept = answer.get("event_id") == given and isinstance(frame, dict) and frame.get("event_id") == given
    ctx.target.facts["given_event_id"] = (kept, "EV-2: an event_id given in the published frame is not kept, and "
                                                "the exploration attributes its events by the ids it gives")
    ctx.check("EV-2", kept, "an event_id given in the published frame must be kept, returned by the publish and "
              "delivered", {"publish answer": given, "frame": given},
              {"publish answer": answer.get("event_id"), "frame": frame.get("event_id") if isinstance(frame, dict)
               else frame})
