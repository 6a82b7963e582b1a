"""Recording a run's end: what a run's supervisor runs after the job exits.

`python -m reconciler.runs.finish --repo R --db URL RUN_ID` reconciles that run (final
state, retry under ON_FAILURE) and starts the WAITING runs its slot frees. Any other
reconciler call that looks does the same, so this is an optimisation of latency, not
the only path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reconciler-finish")
    parser.add_argument("--repo", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("run_id")
    args = parser.parse_args(argv)
    from reconciler.clock import clock_from_environment
    from reconciler.errors import ReconcilerError
    from reconciler.ids import RunId
    from reconciler.runs.dispatch import Runner
    from reconciler.store import Store
    from reconciler.store.runs import RunStore

    try:
        with Store.open(args.db) as store:
            runner = Runner(
                repo=Path(args.repo),
                store=store,
                runs=RunStore(store),
                clock=clock_from_environment(),
                db_url=args.db,
            )
            run = runner.runs.get(RunId(args.run_id))
            if run is not None:
                runner.reconcile_run(run)
            runner.pump()
    except ReconcilerError as exc:
        sys.stderr.write(f"reconciler finish {args.run_id}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
