"""``provtel report``, ``provtel diff``, ``provtel export`` and ``provtel graph``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any


def _target(args: argparse.Namespace, name: str = "run") -> Path:
    from provtel.exporter.report.document import latest_document

    if getattr(args, "latest", None):
        return latest_document(Path(args.latest))
    value = getattr(args, name)
    if value is None:
        raise FileNotFoundError("give RUN (a run or job folder, or its prov.json) or --latest DIR")
    return Path(value)


def _cmd_report(args: argparse.Namespace) -> int:
    from provtel.exporter.report.analysis import analyse
    from provtel.exporter.report.document import load
    from provtel.exporter.report.progress import progress_bar
    from provtel.exporter.report.text import render, summary

    try:
        run = load(_target(args))
    except (FileNotFoundError, ValueError) as exc:
        print(f"provtel report: {exc}", file=sys.stderr)
        return 2
    progress = progress_bar(args.progress)
    report = analyse(run, progress, curves=bool(args.html))
    if args.html:
        from provtel.exporter.report.html import write_html

        try:
            path = write_html(report, run, Path(args.html), progress)
        except ImportError as exc:
            print(
                f"provtel report: the HTML report needs provtel-exporter[report] ({exc})",
                file=sys.stderr,
            )
            return 2
        print(f"{path}: HTML report of {run.folder}", file=sys.stderr)
    if args.json:
        print(json.dumps(_nan_to_none(report), indent=1, default=str))
    elif not args.html:
        print(summary(report) if args.summary else render(report))
    return 0


def _nan_to_none(obj: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def _cmd_diff(args: argparse.Namespace) -> int:
    from provtel.exporter.report.analysis import analyse
    from provtel.exporter.report.diff import diff, render_diff
    from provtel.exporter.report.document import load
    from provtel.exporter.report.progress import progress_bar

    progress = progress_bar(args.progress)
    reports = []
    for name in progress([args.run_a, args.run_b], 2, "reading runs"):
        try:
            reports.append(analyse(load(Path(name))))
        except (FileNotFoundError, ValueError) as exc:
            print(f"provtel diff: {exc}", file=sys.stderr)
            return 2
    result = diff(reports[0], reports[1])
    if args.json:
        print(json.dumps(_nan_to_none(result), indent=1, default=str))
    else:
        print(render_diff(result))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from provtel.exporter.report.convert import export_document
    from provtel.exporter.report.document import find_document

    try:
        source = find_document(Path(args.doc))
        target = export_document(source, args.format, Path(args.output) if args.output else None)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"provtel export: {exc}", file=sys.stderr)
        return 2
    print(target)
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    from provtel.exporter.report.document import load
    from provtel.exporter.report.graph import write_graph

    try:
        path = write_graph(load(Path(args.doc)), Path(args.output))
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"provtel graph: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )


def add_report_parsers(sub: Any) -> None:
    """Register ``report``, ``diff``, ``export`` and ``graph`` on the ``provtel`` parser."""
    report = sub.add_parser(
        "report", help="what a run did and where its time went (text, --json, --html FILE)"
    )
    report.add_argument("run", nargs="?", metavar="RUN", help="run or job folder, or prov.json")
    report.add_argument("--latest", metavar="DIR", help="the newest DIR/*/prov.json")
    report.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    report.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    report.add_argument("--summary", action="store_true", help="only the end-of-run summary")
    _progress_flag(report)
    report.set_defaults(func=_cmd_report)

    diff = sub.add_parser("diff", help="what differed between two runs, and what it changed")
    diff.add_argument("run_a", metavar="RUN_A")
    diff.add_argument("run_b", metavar="RUN_B")
    diff.add_argument("--json", action="store_true", help="the differences as JSON")
    _progress_flag(diff)
    diff.set_defaults(func=_cmd_diff)

    from provtel.exporter.report.convert import EXPORT_FORMATS

    export = sub.add_parser("export", help="the document in another PROV serialisation")
    export.add_argument("doc", metavar="DOC", help="prov.json or its run folder")
    export.add_argument("--format", required=True, choices=sorted(EXPORT_FORMATS))
    export.add_argument("-o", "--output", metavar="FILE", help="default: beside the document")
    export.set_defaults(func=_cmd_export)

    graph = sub.add_parser("graph", help="draw the PROV graph (step blocks collapsed)")
    graph.add_argument("doc", metavar="DOC", help="prov.json or its run folder")
    graph.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="run.svg, run.png, run.pdf or run.dot"
    )
    graph.set_defaults(func=_cmd_graph)
