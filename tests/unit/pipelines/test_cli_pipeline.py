"""`opensage pipeline show` draws a graph: boxes per step, edges routed between layers."""

from __future__ import annotations

from opensage.cli.pipeline import Node, layout, render


def test_render_diamond_draws_every_box_and_joins_edges_into_arrows():
    nodes = {"Prep": Node("Prep", "Succeeded", "Processing"), "Left": Node("Left", "Failed", "Training"),
             "Right": Node("Right", "Executing", "Training"), "Join": Node("Join", None, "Model")}
    picture = render(nodes, [("Prep", "Left"), ("Prep", "Right"), ("Left", "Join"), ("Right", "Join")])
    lines = picture.splitlines()
    assert "✔ Prep" in picture and "✘ Left" in picture and "▶ Right" in picture and "○ Join" in picture
    row = {n: next(i for i, line in enumerate(lines) if f" {n} " in line) for n in ("Prep", "Left", "Join")}
    assert row["Prep"] < row["Left"] < row["Join"]
    left_right = next(line for line in lines if "Left" in line)
    assert "Right" in left_right  # siblings side by side: a layered graph, not a list
    assert picture.count("▼") == 3  # Left, Right and Join have incoming edges
    assert "┴" in picture or "┬" in picture


def test_layout_long_edge_goes_through_dummy_nodes():
    layers, links = layout(["A", "B", "C"], [("A", "B"), ("B", "C"), ("A", "C")])
    assert layers[0] == ["A"] and "C" in layers[2]
    assert any(n.startswith("\0A\0C") for n in layers[1])
    assert ("A", "C") not in links
