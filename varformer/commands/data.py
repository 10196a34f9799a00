"""``varformer data check ROOT`` / ``varformer data list``: inspect benchmark folders."""
from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="report every known benchmark found under ROOT: pairs, expected count, "
                                         "unpaired / unreadable / mismatched files; or an authors' JSON list "
                                         "(entries per dataset, missing files, and for a training list what it "
                                         "implies for the methods' recipes)")
    check.add_argument("root", help="folder to search (up to 6 levels deep), or a JSON list file")
    check.add_argument("--list-root", default=None,
                       help="JSON list: the folder its relative paths start from (the one holding data/)")
    check.add_argument("--benchmarks", nargs="*", default=[], help="only these benchmark names")
    check.add_argument("--quick", action="store_true", help="read image headers only (does not find truncated files)")
    check.add_argument("--limit", type=int, default=0, help="list at most this many files per problem (0: all)")
    sub.add_parser("list", help="the benchmarks and layouts recognised")


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    if args.action == "list":
        from varformer.data.catalog import BENCHMARKS  # start-up
        for b in BENCHMARKS.values():
            exp = "?" if b.expected is None else b.expected
            print(f"{b.name:<22} {b.task:<10} expected {exp!s:<5} layout: {b.layout}")
        print("demo-<task>            built-in demo set (rain, haze, blur, lowlight, noise)")
        return 0
    from varformer.data.check import check_root, format_reports  # start-up
    from varformer.errors import DataError  # start-up
    if os.path.isfile(args.root) and args.root.lower().endswith(".json"):
        return _check_list(args.root, args.list_root, args.limit)
    if os.path.isfile(args.root):
        raise DataError(f"{args.root} is a file, not a folder: 'varformer data check' takes the folder that holds "
                        f"the benchmarks (e.g. {os.path.dirname(os.path.abspath(args.root))})")
    reports = check_root(args.root, args.benchmarks, full=not args.quick)
    print(format_reports(args.root, reports, args.limit))
    if not reports:
        return 1
    return 0 if all(r.ok for r in reports) else 1


def _check_list(path: str, root, limit: int) -> int:
    """An authors' JSON list: what it holds, which files are missing, and the training length it implies."""
    from varformer.data.json_list import describe_list  # start-up: only this data command reads lists
    from varformer.methods import registry  # start-up
    lines, n_missing = describe_list(path, root, limit or 5)
    print("\n".join(lines))
    for spec in registry.methods().values():
        if spec.training_list is not None:
            print("\n".join(spec.training_list(path)))
    return 1 if n_missing else 0
