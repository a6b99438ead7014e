"""What the fuzzer sends, as hypothesis strategies: sessions of inbound steps.

A step is one inbound message (a JSON document, rendered at send time, in a text or binary frame,
perhaps mangled, padded near IN-4's limit or fragmented) or one raw protocol oddity (a control
frame, an RFC 6455 violation). Documents hold placeholders for what only the run knows: `Ref`
(a world id, perhaps disguised: upper case, unicode digits, braces...) and `TokenRef` (a token of
a known kind). `Raw` is JSON text inserted as it is (NaN, huge integers, deep nesting).

Generation is hypothesis's own: `draw(strategy, n, seed)` runs a bounded @given over the strategy
(generate phase only, no database, seeded) and collects what it was given, so the same seed
draws the same sessions, and hypothesis's bias towards edge cases (empty strings, boundaries,
repeats of earlier choices) shapes them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

LIMIT = 65536  # IN-4


@dataclass(frozen=True)
class Ref:
    """A world id known at run time: `name` (see render.Values), disguised by `how`."""

    name: str
    how: str = "exact"


@dataclass(frozen=True)
class TokenRef:
    """A token of a known kind (render.Values.tokens)."""

    kind: str


@dataclass(frozen=True)
class Raw:
    """JSON text inserted verbatim: literals Python accepts and JSON does not, huge numbers, nesting."""

    text: str


@dataclass(frozen=True)
class Step:
    kind: str  # "text" | "binary" | "ping" | "pong" (control frames) | "violation"
    doc: Any = None  # the document (None: `raw` is the payload)
    raw: bytes = b""
    ascii: bool = True  # non-ASCII as \u escapes
    encoding: str = "utf-8"  # utf-8 | surrogatepass (invalid UTF-8 for lone surrogates) | utf-8-sig | utf-16* | utf-32
    mangle: tuple[str, int] = ("", 0)  # makes the rendered text invalid JSON
    pad_to: int = 0  # pad the rendered object to this many bytes (IN-4)
    pad_char: str = "x"
    fragments: int = 1
    ping_between: bool = False  # a transport ping between fragments (allowed by RFC 6455)
    violation: str = ""


@dataclass(frozen=True)
class Session:
    who: str  # "alice" (connects to workspace A) or "carol" (workspace B)
    opening: Step | None  # None: authenticates with its own token; a step: that is the first data frame
    pre_pings: int  # transport pings before the first data frame (they do not count, HS-3)
    batches: tuple[tuple[Step, ...], ...]
    ending: str  # "close" (close handshake) or "abort" (the socket just goes)
    steps: int = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "steps", (self.opening is not None) + sum(map(len, self.batches)))


def weighted(*pairs: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """one_of with weights: a drawn index into a table holding each branch `weight` times
    (hypothesis's one_of merges equal branches and picks among the rest)."""
    table = [s for w, s in pairs for _ in range(w)]

    @st.composite
    def pick(draw):
        return draw(table[draw(st.integers(0, len(table) - 1))])
    return pick()


# -- values -----------------------------------------------------------------------------------------

NAMES = ("ws", "user", "other_ws", "other_user", "own_task", "other_task", "own_chat", "other_chat", "chat_task",
         "orphan_task", "canary_task")
HOWS = ("exact",) * 6 + ("upper", "braces", "urn", "nohyphen", "unicode-digits", "fullwidth", "padded",
                         "truncated", "surrogate")
ODD = ("", " ", "\x00", "\ufeff", "\u202e", "\U0001f642", "é", "\u0663", "\uff11", "\u00a0", "null", "ping",
       "\\", '"', "\u2028", "a" * 300)

lone_surrogate = st.integers(0xD800, 0xDFFF).map(chr)
short_text = st.text(max_size=12)
texts = weighted(
    (6, st.text(max_size=30)),
    (3, st.sampled_from(ODD)),
    (2, st.builds(lambda a, s, b: a + s + b, short_text, lone_surrogate, short_text)),
    (1, st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "\u20ac", "\U0001f642", "\\", '"']),
                  st.integers(100, 9000))),
)
raw_values = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-0", "1E-400", "0.0e0"]).map(Raw),
    st.integers(20, 6000).map(lambda n: Raw("9" * n)),  # huge integers
    st.builds(lambda n, kind: Raw(("[" * n + "]" * n) if kind == "list" else ('{"a":' * n + "1" + "}" * n)),
              st.integers(50, 10000), st.sampled_from(["list", "object"])),  # deep nesting
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=False, allow_infinity=False), texts)
values = weighted(
    (8, st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(short_text, c, max_size=3),
                     max_leaves=4)),
    (2, raw_values),
)
extra = weighted((3, st.just({})), (1, st.dictionaries(
    short_text.filter(lambda k: k not in ("type", "payload", "scope", "id", "since", "token")), values, max_size=2)))

refs = st.builds(Ref, st.sampled_from(NAMES), st.sampled_from(HOWS))
ids = weighted((5, refs), (2, st.uuids().map(str)), (3, texts))
scopes = weighted((6, st.sampled_from(["workspace", "user", "task", "chat"])),
                  (2, st.sampled_from(["global", "daemon_runtime", "Task", "task ", "workspace\x00", "TASK"])),
                  (1, texts))
# Positions the target gave out (the canary's latest and an older one, by scope): resumes that parse.
positions = st.builds(Ref, st.sampled_from(["pos_task", "pos_ws", "pos_task_old", "pos_ws_old"]),
                      st.sampled_from(("exact",) * 5 + ("upper", "truncated", "surrogate", "unicode-digits")))
since = weighted((3, st.none()), (3, texts), (3, positions),
                 (2, st.sampled_from(["0-0", "0", "-1", "$", "p-1", "\u0661-\u0662", "v1:task:1-0", "1-1"])), (2, values))


def _obj(base: dict, more: dict, first: bool) -> dict:
    """`base` plus extra fields, the contract's fields first or last (order must not matter)."""
    more = {k: v for k, v in more.items() if k not in base}
    return {**base, **more} if first else {**more, **base}


proper_payload = st.builds(
    lambda scope, id_, s, with_since, more, first: _obj({"scope": scope, "id": id_, **({"since": s} if with_since else {})},
                                                       more, first),
    scopes, ids, since, st.booleans(), extra, st.booleans())
wrong_payload = st.one_of(
    values,  # not an object
    st.fixed_dictionaries({}, optional={"scope": scopes, "id": ids}),  # keys missing
    st.fixed_dictionaries({"scope": values | scopes, "id": values | ids}),  # wrong types
)
payloads = weighted((7, proper_payload), (3, wrong_payload))

tokens = st.sampled_from(["good", "good", "pat", "expired", "no-sub", "empty-sub", "disabled", "outsider", "alg-none",
                          "bad-sig", "truncated", "non-ascii", "surrogate", "junk-pat", "space", "empty"]).map(TokenRef)


def _typed(kind, payload, more, first) -> dict:
    return _obj({"type": kind, **({"payload": payload} if payload is not ... else {})}, more, first)


pings = st.builds(_typed, st.just("ping"), st.just(...) | values, extra, st.booleans())
subscribes = st.builds(_typed, st.sampled_from(["subscribe", "unsubscribe"]), payloads, extra, st.booleans())
auths = st.builds(_typed, st.just("auth"),
                  weighted((8, st.fixed_dictionaries({"token": tokens})), (2, st.fixed_dictionaries({"token": values})),
                           (1, values)),
                  extra, st.booleans())
unknown = st.one_of(
    st.builds(_typed, st.sampled_from(["Ping", "PING", "ping ", "pong", "subscribe_ack", "auth_ack", "publish", "",
                                       "event", "Subscribe", "sub\u0073cribe\x00"]) | values, st.just(...) | payloads,
              extra, st.booleans()),
    st.dictionaries(short_text.filter(lambda k: k != "type"), values, max_size=3),  # no type at all
    values.filter(lambda v: not isinstance(v, dict)),  # not an object
)
docs = weighted((3, pings), (8, subscribes), (2, unknown), (1, auths))


def _text_step(doc, ascii_, fragments, ping_between, surrogatepass) -> Step:
    return Step("text", doc, ascii=ascii_, encoding="surrogatepass" if surrogatepass and not ascii_ else "utf-8",
                fragments=fragments, ping_between=ping_between)


text_steps = st.builds(_text_step, docs, st.booleans(), weighted((6, st.just(1)), (1, st.integers(2, 5))),
                       st.booleans(), weighted((4, st.just(False)), (1, st.just(True))))
mangled = st.builds(lambda doc, how, at: Step("text", doc, mangle=(how, at)), docs,
                    st.sampled_from(["truncate", "trailing-comma", "single-quotes", "garbage-after", "garbage-before",
                                     "unquoted-key"]), st.integers(0, 10_000))
binary = st.one_of(
    st.builds(lambda doc, enc: Step("binary", doc, ascii=False, encoding=enc), docs,
              st.sampled_from(["utf-8", "utf-8-sig", "utf-16-le", "utf-16-be", "utf-16", "utf-32", "utf-32-be"])),
    st.binary(max_size=64).map(lambda b: Step("binary", raw=b)),
)
raw_text = st.binary(max_size=64).map(lambda b: Step("text", raw=b))  # often invalid UTF-8 (1007)
big = st.builds(lambda doc, size, char, fragments: Step("text", doc, pad_to=size, pad_char=char, fragments=fragments),
                st.sampled_from([{"type": "ping"}, {"type": "subscribe", "payload": {"scope": "workspace", "id": Ref("ws")}},
                                 {"type": "unsubscribe", "payload": {"scope": "task", "id": Ref("own_task")}}]),
                st.sampled_from([LIMIT - 1, LIMIT, LIMIT + 1, LIMIT + 7, 70_000, 2 * LIMIT]),
                st.sampled_from(["x", "é", "\u20ac", "\U0001f642"]),
                weighted((3, st.just(1)), (1, st.integers(2, 8))))
control = st.builds(Step, st.sampled_from(["ping", "pong"]), st.none(), st.binary(max_size=125))
VIOLATIONS = ("continuation-first", "control-too-long", "fragmented-control", "reserved-opcode", "rsv1",
              "unmasked", "text-inside-fragments", "bad-close-code", "close-code-5000", "close-1-byte")
violations = st.sampled_from(VIOLATIONS).map(lambda v: Step("violation", violation=v))

steps = weighted((60, text_steps), (8, mangled), (8, binary), (4, raw_text), (2, big), (5, control), (1, violations))
openings = weighted(
    (12, st.builds(lambda t, more, first: Step("text", _obj({"type": "auth", "payload": {"token": t}}, more, first)),
                   tokens, extra, st.booleans())),
    (5, steps),  # junk, or anything else, as the first frame
    (2, st.builds(lambda t, enc: Step("binary", {"type": "auth", "payload": {"token": t}}, ascii=False, encoding=enc),
                  tokens, st.sampled_from(["utf-8", "utf-16-le", "utf-8-sig"]))),
    (1, st.builds(lambda t, size: Step("text", {"type": "auth", "payload": {"token": t}}, pad_to=size), tokens,
                  st.sampled_from([LIMIT, LIMIT + 1]))),
)
sessions = st.builds(
    Session,
    who=st.sampled_from(["alice", "alice", "alice", "carol"]),
    opening=weighted((3, st.none()), (1, openings)),
    pre_pings=weighted((4, st.just(0)), (1, st.integers(1, 2))),
    batches=st.lists(st.lists(steps, min_size=1, max_size=4).map(tuple), min_size=1, max_size=8).map(tuple),
    ending=st.sampled_from(["close", "close", "abort"]),
)


# -- drawing --------------------------------------------------------------------------------------

def draw(strategy: st.SearchStrategy, n: int, seed: int) -> list:
    """n values of `strategy`, the same for the same seed: a bounded @given run that keeps what
    it was given (generate phase only; no example database; explicit settings, so the test
    suite's profiles change nothing)."""
    out: list = []

    @settings(max_examples=n, database=None, derandomize=False, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, report_multiple_bugs=False)
    @hypothesis_seed(seed)
    @given(strategy)
    def collect(value):
        out.append(value)

    collect()
    return out[:n]


def sub_seed(seed: int, *parts: int) -> int:
    """A seed for one lane's chunk, derived from the run's seed (stable across Python runs)."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


CHUNK = 8  # sessions drawn at a time (about 60 steps)


def chunk(seed: int, lane: int, k: int) -> list[Session]:
    """Lane `lane`'s k-th chunk of sessions: what a seed replays, lane by lane."""
    return draw(sessions, CHUNK, sub_seed(seed, lane, k))


def session_stream(seed: int, lane: int) -> Iterator[Session]:
    """Lane `lane`'s sessions, endless."""
    k = 0
    while True:
        yield from chunk(seed, lane, k)
        k += 1
