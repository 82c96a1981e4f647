"""``opensage pipeline show EXECUTION_ARN``: the execution's DAG drawn in the terminal, each step a box with
its status, edges routed between layers (a graph, not a list).

Layout (a small Sugiyama): layers by longest path from the roots, long edges carried through invisible
dummy nodes, a few barycenter sweeps to untangle the order, then edges drawn on a character canvas where
each cell remembers which directions it connects (so junctions become the right box-drawing character).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import click

ICONS = {"Succeeded": ("✔", "green"), "Failed": ("✘", "red"), "Executing": ("▶", "cyan"),
         "Starting": ("◌", "cyan"), "Stopping": ("■", "yellow"), "Stopped": ("■", "yellow"),
         None: ("○", "bright_black")}
UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8
JUNCTIONS = {UP | DOWN: "│", LEFT | RIGHT: "─", DOWN | RIGHT: "┌", DOWN | LEFT: "┐", UP | RIGHT: "└",
             UP | LEFT: "┘", UP | DOWN | RIGHT: "├", UP | DOWN | LEFT: "┤", DOWN | LEFT | RIGHT: "┬",
             UP | LEFT | RIGHT: "┴", UP | DOWN | LEFT | RIGHT: "┼", UP: "│", DOWN: "│", LEFT: "─", RIGHT: "─"}
BOX_HEIGHT = 4  # top border, name, detail, bottom border
GAP = 3


@dataclass
class Node:
    name: str
    status: str | None  # StepStatus; None = not run (yet, or a branch not taken)
    detail: str = ""  # second line: type, duration, cache hit
    dummy: bool = False

    @property
    def width(self) -> int:
        if self.dummy:
            return 1
        return max(len(self.name) + 2, len(self.detail)) + 4


def layout(names: list[str], edges: list[tuple[str, str]]) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Layers of node names (dummies named ``\\0<from>\\0<to>\\0<k>``), ordered to reduce crossings."""
    ups: dict[str, list[str]] = {n: [] for n in names}
    for a, b in edges:
        ups[b].append(a)
    level: dict[str, int] = {}

    def depth(n: str, seen: tuple = ()) -> int:
        if n not in level:
            level[n] = 0 if n in seen else 1 + max((depth(u, (*seen, n)) for u in ups[n]), default=-1)
        return level[n]

    for n in names:
        depth(n)
    layers: list[list[str]] = [[] for _ in range(max(level.values(), default=0) + 1)]
    for n in names:
        layers[level[n]].append(n)
    links: list[tuple[str, str]] = []
    for a, b in edges:
        prev = a
        for k in range(level[a] + 1, level[b]):
            dummy = f"\0{a}\0{b}\0{k}"
            layers[k].append(dummy)
            links.append((prev, dummy))
            prev = dummy
        links.append((prev, b))
    position = {n: i for layer in layers for i, n in enumerate(layer)}
    for sweep in range(4):  # barycenter heuristic, down then up
        rng = range(1, len(layers)) if sweep % 2 == 0 else range(len(layers) - 2, -1, -1)
        for i in rng:
            def bary(n: str, downward: bool = sweep % 2 == 0) -> float:
                near = ([position[a] for a, b in links if b == n] if downward else
                        [position[b] for a, b in links if a == n])
                return sum(near) / len(near) if near else position[n]
            layers[i].sort(key=bary)
            for j, n in enumerate(layers[i]):
                position[n] = j
    return layers, links


def render(nodes: dict[str, Node], edges: list[tuple[str, str]], color: bool = False) -> str:
    layers, links = layout(list(nodes), edges)
    for layer in layers:
        for n in layer:
            if n not in nodes:
                nodes[n] = Node(n, None, dummy=True)
    widths = [sum(nodes[n].width for n in layer) + GAP * (len(layer) - 1) for layer in layers]
    total = max(widths, default=0) + 2
    center: dict[str, int] = {}
    top: list[int] = []
    row = 0
    parents_per_gap: list[list[str]] = []
    for i, layer in enumerate(layers):
        x = (total - widths[i]) // 2
        for n in layer:
            center[n] = x + nodes[n].width // 2
            x += nodes[n].width + GAP
        top.append(row)
        parents = [n for n in layer if any(a == n for a, _ in links)]
        parents_per_gap.append(parents)
        row += BOX_HEIGHT + (len(parents) + 1 if parents else 0)
    height = row
    grid = [[0] * total for _ in range(height)]
    text: dict[tuple[int, int], tuple[str, str | None]] = {}

    def line(r0: int, c0: int, r1: int, c1: int) -> None:
        if r0 == r1:
            for c in range(min(c0, c1), max(c0, c1)):
                grid[r0][c] |= RIGHT
                grid[r0][c + 1] |= LEFT
        else:
            for r in range(min(r0, r1), max(r0, r1)):
                grid[r][c0] |= DOWN
                grid[r + 1][c0] |= UP

    for i, layer in enumerate(layers):
        for n in layer:
            node = nodes[n]
            if node.dummy:
                line(top[i], center[n], top[i] + BOX_HEIGHT - 1, center[n])
                continue
            _box(text, top[i], center[n] - node.width // 2, node, color)
        bus = top[i] + BOX_HEIGHT
        for k, parent in enumerate(parents_per_gap[i]):
            r = bus + k
            start = top[i] + BOX_HEIGHT - 1 if nodes[parent].dummy else bus - 1
            line(start, center[parent], r, center[parent])
            for a, b in links:
                if a != parent:
                    continue
                line(r, center[parent], r, center[b])
                line(r, center[b], top[i + 1], center[b])
    canvas = [[JUNCTIONS.get(m, " ") if m else " " for m in grid_row] for grid_row in grid]
    styles: dict[tuple[int, int], str | None] = {}
    for (r, c), (ch, style) in text.items():
        canvas[r][c] = ch
        styles[(r, c)] = style
    for n, node in nodes.items():  # arrow heads into real boxes, junction on the parent's bottom border
        if node.dummy:
            continue
        i = next(k for k, layer in enumerate(layers) if n in layer)
        if any(b == n for _, b in links):
            canvas[top[i]][center[n]] = "▼"
        if any(a == n for a, _ in links):
            canvas[top[i] + BOX_HEIGHT - 1][center[n]] = "┬"
    out = []
    for r, chars in enumerate(canvas):
        if color:
            rendered = "".join(click.style(ch, fg=styles[(r, c)]) if styles.get((r, c)) else ch
                               for c, ch in enumerate(chars))
        else:
            rendered = "".join(chars)
        out.append(rendered.rstrip())
    return "\n".join(out)


def _box(text: dict, r: int, c: int, node: Node, color: bool) -> None:
    icon, fg = ICONS.get(node.status, ICONS[None])
    w = node.width
    rows = ["┌" + "─" * (w - 2) + "┐",
            "│ " + f"{icon} {node.name}".ljust(w - 4) + " │",
            "│ " + node.detail.ljust(w - 4) + " │",
            "└" + "─" * (w - 2) + "┘"]
    for dr, s in enumerate(rows):
        for dc, ch in enumerate(s):
            text[(r + dr, c + dc)] = (ch, fg if color else None)


# -- the command -------------------------------------------------------------------------------------------
def _seconds(value) -> float:  # noqa: ANN001 - boto3 gives datetimes, tests may give epochs
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def _detail(step_type: str, st: dict | None, guard: str) -> str:
    parts = [step_type]
    if guard:
        parts.append(guard)
    if st:
        if st.get("StartTime") is not None:
            end = _seconds(st["EndTime"]) if st.get("EndTime") is not None else time.time()
            parts.append(f"{end - _seconds(st['StartTime']):.1f}s")
        if st.get("CacheHitResult", {}).get("SourcePipelineExecutionArn"):
            parts.append("cached")
        if st.get("AttemptCount", 1) > 1:
            parts.append(f"attempt {st['AttemptCount']}")
    return " · ".join(parts)


def draw_execution(sm, arn: str, color: bool) -> tuple[str, str]:
    from opensage.pipelines.definition import parse

    execution = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
    definition = parse(sm.describe_pipeline_definition_for_execution(PipelineExecutionArn=arn)["PipelineDefinition"])
    steps = {s["StepName"]: s for s in sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)
             ["PipelineExecutionSteps"]}
    nodes = {}
    for name, step in definition.steps.items():
        guard = " ".join(f"{'if' if outcome else 'else'} {cond}" for cond, outcome in step.guards[-1:])
        st = steps.get(name)
        nodes[name] = Node(name, st.get("StepStatus") if st else None, _detail(step.type, st, guard))
    edges = [(up, name) for name in definition.order for up in sorted(definition.steps[name].upstream)]
    status = execution["PipelineExecutionStatus"]
    head = f"{execution['PipelineArn'].rsplit('/', 1)[-1]} · {arn.rsplit('/', 1)[-1]} · {status}"
    lines = [click.style(head, bold=True) if color else head, "", render(nodes, edges, color)]
    for name, st in steps.items():
        if st.get("FailureReason"):
            lines.append(f"{name}: {st['FailureReason']}")
    if execution.get("FailureReason"):
        lines.append(execution["FailureReason"])
    return "\n".join(lines), status


@click.group()
def pipeline() -> None:
    """SageMaker Pipelines on this platform."""


@pipeline.command()
@click.argument("execution_arn")
@click.option("--home", default=lambda: os.environ.get("OPENSAGE_HOME") or str(Path.home() / ".opensage"),
              show_default="~/.opensage", help="The platform whose client config to use.")
@click.option("--watch", is_flag=True, help="Redraw every 2 s until the execution ends.")
@click.option("--color/--no-color", default=None, help="Colour the statuses (default: when a terminal).")
def show(execution_arn: str, home: str, watch: bool, color: bool | None) -> None:
    """Draw EXECUTION_ARN's steps as a graph with each step's status."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from opensage.cli.clientconfig import config_paths, env_exports

    if config_paths(Path(home).expanduser())["config"].exists():
        os.environ.update({k: v for k, v in env_exports(Path(home).expanduser().resolve()).items()})
    sm = boto3.Session().client("sagemaker")
    use_color = click.get_text_stream("stdout").isatty() if color is None else color
    while True:
        try:
            picture, status = draw_execution(sm, execution_arn, use_color)
        except (ClientError, BotoCoreError) as e:
            raise click.ClickException(str(e)) from None
        if watch:
            click.clear()
        click.echo(picture)
        if not watch or status not in ("Executing", "Stopping"):
            return
        time.sleep(2)
