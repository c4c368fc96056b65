"""The typer side of an applet: one factory so every applet's CLI behaves the same.

Importing this module imports typer; hot paths (the heartbeat one-shot, the daemon's steady
state) must not import it.
"""

import os
import sys

# typer would otherwise import rich, which the zipapp leaves out on purpose (pyproject.toml).
os.environ["TYPER_USE_RICH"] = "0"

import typer  # noqa: E402
from typer._click.exceptions import ClickException  # noqa: E402  (vendored click)
from typer.exceptions import Abort  # noqa: E402

Exit = typer.Exit


def make_app(help_text: str, *, epilog: str | None = None) -> typer.Typer:
    return typer.Typer(
        help=help_text,
        epilog=epilog,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def run(app: typer.Typer, prog: str, argv: list[str]) -> int:
    """Run a typer app on argv; the command's int return value is the exit code."""
    try:
        code = app(args=argv, prog_name=prog, standalone_mode=False)
    except ClickException as usage:  # a bad command line: exit 2
        sys.stderr.write(usage_line(prog, usage) + "\n")
        return usage.exit_code
    except Abort:
        sys.stderr.write("Aborted!\n")
        return 1
    return code if isinstance(code, int) else 0


def usage_line(prog: str, usage: ClickException) -> str:
    """click's error as the one line every applet error is: `PROG: COMMAND: why (try ...)`.

    click would print its usage block and a "Try ... for help." line around it.
    """
    message = " ".join(usage.format_message().split()).rstrip(".")
    ctx = getattr(usage, "ctx", None)
    if ctx is None:
        return f"{prog}: {message}"
    subcommands = ctx.command_path.split()[1:]
    where = "".join(f"{name}: " for name in subcommands)
    return f"{prog}: {where}{message} (try '{ctx.command_path} -h')"
