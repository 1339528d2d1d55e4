"""Comparison reports: run directories in, Markdown + self-contained HTML + PNGs out.

``write_report(load_runs(paths), output_dir)`` is the whole block; the pieces (tables, examples,
faithfulness, plots, render) are usable on their own.
"""

from dialogtune.report.build import ReportOptions, build_document, write_report
from dialogtune.report.collect import RunSummary, TrainingInfo, load_run, load_runs
from dialogtune.report.faithfulness import Finding, find_hallucinations, length_stats

__all__ = [
    "Finding",
    "ReportOptions",
    "RunSummary",
    "TrainingInfo",
    "build_document",
    "find_hallucinations",
    "length_stats",
    "load_run",
    "load_runs",
    "write_report",
]
