"""Tracebacks in the logs of nodes the fuzzer started itself: each is a finding, whatever the
client saw (a handler that crashed after its answer went out is still a crash)."""

from __future__ import annotations

import glob
import os

from .judge import TRACEBACK, Finding

MARK = "Traceback (most recent call last):"


def tracebacks(text: str) -> list[list[str]]:
    """Each traceback's lines: the log line before it, the frames, and the exception line (the
    first unindented line after the marker)."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if MARK not in line:
            continue
        block = lines[max(0, i - 1):i + 1]
        for rest in lines[i + 1:]:
            block.append(rest)
            if rest and not rest.startswith((" ", "\t")):
                break
        found.append(block)
    return found


def scan(log_dir: str) -> list[Finding]:
    findings = []
    for path in sorted(glob.glob(os.path.join(log_dir, "*.log"))):
        node = os.path.splitext(os.path.basename(path))[0]
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for block in tracebacks(text):
            where = next((ln.strip() for ln in reversed(block) if ln.strip().startswith('File "')), "")
            findings.append(Finding(TRACEBACK, (), f"{node}: {block[-1].strip()}" + (f" ({where})" if where else ""),
                                    got=block[-12:], conn=node))
    return findings
