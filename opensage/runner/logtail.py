"""Follow a job's agent files (log lines, phase events) from a stored byte offset, and match metrics.

Offsets are stored in the job's row in the same transaction as the events they produced, so a restarted
control plane resumes exactly where it stopped: no line is lost or ingested twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_READ = 4 * 1024 * 1024  # bytes ingested per file per pass; the rest waits for the next pass


def read_new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """Complete lines after ``offset`` (a partial last line waits); returns (lines, new offset)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(MAX_READ)
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    chunk = data[: end + 1]
    return chunk.decode("utf-8", errors="replace").splitlines(), offset + len(chunk)


def parse_log_line(line: str, fallback_ms: int) -> tuple[int, str]:
    """``<epoch-ms> <text>`` (the agent's format) -> (ms, text)."""
    stamp, _, text = line.partition(" ")
    if stamp.isdigit():
        return int(stamp), text
    return fallback_ms, line


def read_events(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    lines, new_offset = read_new_lines(path, offset)
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events, new_offset


@dataclass
class MetricMatcher:
    """SageMaker MetricDefinitions: the first capture group of each regex is the value.

    Lines are matched as CloudWatch renders them (TAB -> ``#011``), which is what the built-in
    algorithms' published regexes expect, and also as printed, so user regexes with ``\\t`` work too.
    """

    definitions: list[tuple[str, re.Pattern[str]]]

    @classmethod
    def build(cls, definitions: list[dict[str, str]]) -> MetricMatcher:
        compiled = []
        for d in definitions:
            try:
                compiled.append((d["Name"], re.compile(d["Regex"])))
            except re.error:
                continue
        return cls(compiled)

    def match(self, text: str) -> list[tuple[str, float]]:
        if not self.definitions:
            return []
        rendered = text.replace("\t", "#011")
        out = []
        for name, rx in self.definitions:
            m = rx.search(rendered) or (rx.search(text) if rendered != text else None)
            if m and m.groups():
                try:
                    out.append((name, float(m.group(1))))
                except (TypeError, ValueError):
                    continue
        return out
