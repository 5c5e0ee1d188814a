"""The whyspike command line: a thin layer over the library (load_run → diagnose → output)."""

from __future__ import annotations

import click

from .. import __version__
from ..errors import WhyspikeError
from .demo import demo_cmd
from .diagnose import diagnose_cmd
from .landscape import landscape_cmd
from .probe import probe_cmd
from .report import report_cmd
from .run import run_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="whyspike")
def cli() -> None:
    """Why did my model's accuracy (or loss) jump at this epoch? Evidence from your own logs."""


cli.add_command(diagnose_cmd)
cli.add_command(demo_cmd)
cli.add_command(run_cmd)
cli.add_command(landscape_cmd)
cli.add_command(report_cmd)
cli.add_command(probe_cmd)


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input ends in a one-line error and exit 1, bad usage in exit 2 — never a traceback."""
    try:
        rv = cli.main(args=argv, prog_name="whyspike", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except WhyspikeError as exc:
        click.echo(f"whyspike: error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 0
    return rv if isinstance(rv, int) else 0  # click returns ctx.exit(code) values in non-standalone mode


__all__ = ["cli", "main"]
