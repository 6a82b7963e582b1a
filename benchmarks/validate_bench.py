"""Benchmark of `reconciler validate` on generated jobs repos, against a git floor.

For each size it generates (once, then reuses) a committed jobs repo under
`benchmarks/.work/` and measures, as whole child processes, the median over `--runs` of
wall time, CPU time (user + system of the child) and peak RSS of:

- the floor: `git cat-file --batch` reading every blob of HEAD's tree, i.e. the least
  work any validator of a commit must do;
- `reconciler validate --repo REPO`, which must exit 0.

It prints a table and appends (or replaces) its section in `benchmarks/RESULTS.md`.

    .venv/bin/python benchmarks/validate_bench.py [--jobs 1000 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from jobsrepo import (
    RESULTS,
    ROOT,
    Sample,
    ensure_repo,
    machine,
    measure,
    median_sample,
    today,
    write_blob_list,
    write_results,
)

SECTION = "## validate"

# -- measuring ------------------------------------------------------------------------


def check_valid(validate_argv: list[str], jobs: int) -> None:
    """Exit unless validate reads the repo as valid with all of its jobs."""
    out = subprocess.run(validate_argv, capture_output=True, text=True)
    if out.returncode != 0 or f"valid, {jobs} jobs" not in out.stdout:
        raise SystemExit(
            f"{shlex.join(validate_argv)}: expected {jobs} valid jobs:\n"
            f"{out.stdout[-2000:]}{out.stderr[-2000:]}"
        )


@dataclass(frozen=True, slots=True)
class Row:
    jobs: int
    floor: Sample
    validate: Sample


def bench(jobs: int, runs: int, reconciler: str) -> Row:
    repo = ensure_repo(jobs)
    floor_argv = ["git", "-C", str(repo), "cat-file", "--batch"]
    shas = write_blob_list(repo)
    validate_argv = [reconciler, "validate", "--repo", str(repo)]
    measure(floor_argv, stdin=shas)  # warm the page cache
    check_valid(validate_argv, jobs)
    floors = [measure(floor_argv, stdin=shas) for _ in range(runs)]
    validates = [measure(validate_argv) for _ in range(runs)]
    return Row(jobs=jobs, floor=median_sample(floors), validate=median_sample(validates))


# -- reporting ------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = [
        "| jobs | floor wall s | floor CPU s | floor RSS MiB "
        "| validate wall s | validate CPU s | validate RSS MiB | wall ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r.validate.wall / r.floor.wall if r.floor.wall else float("inf")
        lines.append(
            f"| {r.jobs:,} | {r.floor.wall:.3f} | {r.floor.cpu:.3f} | {r.floor.rss_mib:.0f} "
            f"| {r.validate.wall:.3f} | {r.validate.cpu:.3f} | {r.validate.rss_mib:.0f} "
            f"| {ratio:.0f}x |"
        )
    return "\n".join(lines)


def section(rows: list[Row], command: str, runs: int) -> str:
    return (
        f"{SECTION}\n\n"
        f"Date: {today()}  \n"
        f"Machine: {machine()}  \n"
        f"Command: `{command}`  \n"
        f"Median of {runs} runs, each a whole process; CPU is user + system of the child, "
        "RSS its peak. Floor: `git cat-file --batch` reading every blob of HEAD.\n\n"
        f"{table(rows)}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    reconciler = str(Path(sys.executable).parent / "reconciler")
    rows = [bench(jobs, args.runs, reconciler) for jobs in args.jobs]
    print(table(rows))
    if not args.no_write:
        command = ".venv/bin/python benchmarks/validate_bench.py " + shlex.join(
            ["--jobs", *map(str, args.jobs), "--runs", str(args.runs)]
        )
        write_results(SECTION, section(rows, command, args.runs))
        print(f"updated {RESULTS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
