"""The Pareto view: who is dominated, on all four costs and on each, on hand-checkable points."""

from __future__ import annotations

from dialogtune.report.pareto import ParetoPoint, dominates, frontier, mark_dominance, pareto_table


def point(
    name: str, quality: float, params: float, size: float | None, seconds: float, memory: float
) -> ParetoPoint:
    costs = {
        "trainable_params": params,
        "weights_bytes": size,
        "train_seconds": seconds,
        "train_peak_mb": memory,
    }
    return ParetoPoint(name, "m", quality, quality - 0.01, quality + 0.01, costs)


def test_dominance_on_hand_checked_points() -> None:
    zero = point("zero-shot", 0.25, 0, 0, 0, 0)
    lora = point("lora", 0.40, 1e6, 4e6, 600, 2000)
    lora_big = point("lora-big", 0.40, 4e6, 16e6, 600, 2000)  # as good, more parameters: dominated
    full = point("full", 0.42, 1e8, 5e8, 900, 4000)  # best quality: never dominated
    ia3 = point("ia3", 0.20, 5e4, 2e5, 500, 1900)  # worse than zero-shot at a cost: dominated by it
    cheap_slow = point("cheap-slow", 0.40, 5e5, None, 1200, 2000)  # fewer params, slower; size unknown
    points = mark_dominance([zero, lora, lora_big, full, ia3, cheap_slow])

    assert dominates(lora, lora_big, ["trainable_params"]) and not dominates(
        lora_big, lora, ["trainable_params"]
    )
    assert not dominates(lora, lora, ["trainable_params"])  # never itself
    assert [p.name for p in points if not p.dominated_by] == ["zero-shot", "lora", "full", "cheap-slow"]
    assert lora_big.dominated_by == ["lora"] and ia3.dominated_by == ["zero-shot"]
    # one cost at a time: cheap-slow beats lora on parameters, lora beats it on time
    assert lora.dominated_on["trainable_params"] == ["cheap-slow"]
    assert cheap_slow.dominated_on["train_seconds"] == ["lora", "lora-big", "full"]
    assert cheap_slow.dominated_on["weights_bytes"] == []  # unknown size: no comparison on that axis
    assert [p.name for p in frontier(points, "trainable_params")] == ["zero-shot", "cheap-slow", "full"]

    table = pareto_table(points)
    rows = {row[0]: row for row in table.rows}
    assert rows["lora-big"][7] == "dominated by lora" and rows["full"][7] == "Pareto-optimal"
    assert rows["cheap-slow"][8] == "training wall time"  # equal memory at equal quality: no
    assert [row[0] for row in table.rows][0] == "full"  # best quality first
