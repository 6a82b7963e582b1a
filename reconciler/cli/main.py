"""The `reconciler` command: a click group whose commands parse, call the core, render.

Invariants: exit 0 ok; 1 for any error, usage errors included; 2 only from
`--detailed-exitcode` with changes. A user mistake never prints a traceback:
`ReconcilerError` and click's errors become one clear message on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from reconciler.errors import ReconcilerError


class ReconcilerGroup(click.Group):
    """A group that maps every error to exit code 1 with a one-line message."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        code = self._run(args, prog_name, complete_var, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(
        self,
        args: Sequence[str] | None,
        prog_name: str | None,
        complete_var: str | None,
        **extra: Any,
    ) -> int:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            return int(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            return 1
        except click.Abort:
            click.echo("Aborted.", err=True)
            return 1
        except ReconcilerError as exc:
            click.echo(f"error: {exc}", err=True)
            return 1
        except BrokenPipeError:
            return 1
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            return 130
        return result if isinstance(result, int) else 0


@click.group(cls=ReconcilerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reconciler")
def cli() -> None:
    """Declarative GitOps reconciler for data and batch jobs."""


def _register() -> None:
    from reconciler.cli.gitops_cmd import COMMANDS as GITOPS_COMMANDS
    from reconciler.cli.init_cmd import init
    from reconciler.cli.jobs_cmd import jobs
    from reconciler.cli.ownership_cmd import COMMANDS as OWNERSHIP_COMMANDS
    from reconciler.cli.plan_cmd import apply, history, plan
    from reconciler.cli.runs_cmd import COMMANDS as RUN_COMMANDS
    from reconciler.cli.schedule_cmd import schedule
    from reconciler.cli.schema_cmd import schema
    from reconciler.cli.serve_cmd import serve, status
    from reconciler.cli.validate_cmd import validate

    for command in (
        init,
        validate,
        schema,
        jobs,
        schedule,
        plan,
        apply,
        history,
        *RUN_COMMANDS,
        serve,
        status,
        *GITOPS_COMMANDS,
        *OWNERSHIP_COMMANDS,
    ):
        cli.add_command(command)


_register()


def main() -> None:
    cli.main(prog_name="reconciler")
