"""`reconciler schema`: print or write the JSON Schemas of the jobs-repo file kinds."""

from __future__ import annotations

from pathlib import Path

import click

from reconciler.spec.kinds import KINDS, render_schema_text


def write_schemas(directory: Path) -> list[Path]:
    """Write `<kind>.json` for every kind into `directory`; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in sorted(KINDS):
        path = directory / f"{kind}.json"
        path.write_text(render_schema_text(kind), encoding="utf-8")
        written.append(path)
    return written


@click.command()
@click.argument("kind", required=False, type=click.Choice(sorted(KINDS)))
@click.option(
    "--write",
    "write_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write <kind>.json files into this directory instead of printing.",
)
def schema(kind: str | None, write_dir: Path | None) -> None:
    """Print the JSON Schema of KIND (job, reconciler, teams, profile, schedule)."""
    if write_dir is not None:
        if kind is not None:
            raise click.UsageError("--write writes every kind; leave out KIND")
        for path in write_schemas(write_dir):
            click.echo(f"wrote {path}")
        return
    if kind is None:
        raise click.UsageError(f"give a KIND ({', '.join(sorted(KINDS))}) or --write DIR")
    click.echo(render_schema_text(kind), nl=False)
