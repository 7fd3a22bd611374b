"""The ``provtel`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _latest(directory: Path) -> Path:
    docs = sorted(directory.glob("*/prov.json"), key=lambda p: p.stat().st_mtime)
    if not docs:
        raise SystemExit(f"provtel: no */prov.json under {directory}")
    return docs[-1]


def _cmd_validate(args: argparse.Namespace) -> int:
    from provtel.exporter.prov.validate import check_file

    paths = [Path(p) for p in args.files]
    if args.latest:
        paths.append(_latest(Path(args.latest)))
    if not paths:
        print("provtel validate: give FILE... or --latest DIR", file=sys.stderr)
        return 2
    status = 0
    for path in paths:
        try:
            report = check_file(path, round_trips=not args.quick, yprov=args.yprov)
        except FileNotFoundError as exc:
            print(f"provtel validate: {exc}", file=sys.stderr)
            status = 2  # an error, not an invalid document: stays 2
            continue
        if report.problems:
            status = max(status, 1)
            print(f"{path}: INVALID")
            for problem in report.problems:
                print(f"  - {problem}")
        else:
            print(f"{path}: valid")
        for note in report.notes:  # what was not checked (a missing checker, a big file)
            print(f"  note: {note}")
    return status


def _skipped(command: str, where: Path, problems: list[str]) -> None:
    """One line for the journal lines a command had to skip (never a traceback)."""
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        print(
            f"provtel {command}: {where}: skipped {len(problems)} unreadable journal line(s): "
            f"{problems[0]}{more}",
            file=sys.stderr,
        )


def _cmd_recover(args: argparse.Namespace) -> int:
    from provtel.exporter.prov.store import DOCUMENT, JOURNAL, recover, unfinished_runs

    status = 0
    for name in args.run_dirs:
        given = Path(name)
        if (given / JOURNAL).is_file() or (given / DOCUMENT).exists():
            run_dirs = [given]
        elif given.is_dir():  # an output folder: every unfinished run under it
            run_dirs = unfinished_runs(given)
            if not run_dirs:
                print(f"{given}: nothing to recover (no unfinished run under it)")
                continue
        else:
            print(f"provtel recover: no {JOURNAL} in {given}", file=sys.stderr)
            status = 2
            continue
        for run_dir in run_dirs:
            if (run_dir / DOCUMENT).exists() and not args.force:
                print(f"{run_dir}: already has {DOCUMENT} (use --force to rebuild it)")
                continue
            if not (run_dir / JOURNAL).is_file():
                print(f"provtel recover: no {JOURNAL} in {run_dir}", file=sys.stderr)
                status = 2
                continue
            problems: list[str] = []
            try:
                document = recover(run_dir, problems)
            except (OSError, ValueError) as exc:  # unreadable, not a journal, disk full
                print(f"provtel recover: {run_dir}: {exc}", file=sys.stderr)
                status = 2
                continue
            _skipped("recover", run_dir, problems)
            print(f"{run_dir}: recovered {document} (marked incomplete)")
    return status


def _cmd_merge(args: argparse.Namespace) -> int:
    from provtel.exporter.prov.store import merge_job

    status = 0
    for name in args.job_dirs:
        problems: list[str] = []
        try:
            document = merge_job(Path(name), problems)
        except (OSError, ValueError) as exc:
            print(f"provtel merge: {name}: {exc}", file=sys.stderr)
            status = 2
            continue
        _skipped("merge", Path(name), problems)
        print(f"{name}: merged into {document}")
    return status


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``provtel``."""
    parser = argparse.ArgumentParser(prog="provtel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check PROV-JSON documents (schema, prov, lint)")
    validate.add_argument("files", nargs="*", help="PROV-JSON files")
    validate.add_argument("--latest", metavar="DIR", help="also the newest DIR/*/prov.json")
    validate.add_argument(
        "--quick",
        action="store_true",
        help="schema, parse and lint only; skip the format round trips",
    )
    validate.add_argument(
        "--yprov",
        action="store_true",
        help="also the yProv Explorer rules: top-level records, drawn relations, plain labels",
    )
    validate.set_defaults(func=_cmd_validate)
    recover = sub.add_parser("recover", help="write the document of a killed run from its journal")
    recover.add_argument(
        "run_dirs",
        nargs="+",
        metavar="DIR",
        help="run folders, or output folders (every unfinished run under them)",
    )
    recover.add_argument("--force", action="store_true", help="rebuild an existing prov.json")
    recover.set_defaults(func=_cmd_recover)
    merge = sub.add_parser("merge", help="merge the rank folders of a job into one document")
    merge.add_argument("job_dirs", nargs="+", metavar="JOB_DIR", help="job folders")
    merge.set_defaults(func=_cmd_merge)
    from provtel.exporter.receiver.cli import add_convert_parser, add_serve_parser

    add_serve_parser(sub)
    add_convert_parser(sub)
    from provtel.exporter.report.cli import add_report_parsers

    add_report_parsers(sub)
    from provtel.exporter.upload import add_upload_parser

    add_upload_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
