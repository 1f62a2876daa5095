"""What the command lines share: every error as one ``error: ...`` line on stderr, never a traceback.

The commands raise click's own exceptions: click raises :class:`click.UsageError`
and :class:`click.BadParameter` for a bad option, and :func:`one_line_errors`
turns the library's errors into :class:`click.ClickException`. What click
cannot do is print them in one line (it prints the usage, a hint and the
message): :class:`OneLineErrors` does, with the exception's exit status.
"""

import contextlib
import sys

import click

from untapped.files import one_line
from untapped.startup import StartupError


class OneLineErrors(click.Group):
    """A click group whose errors print as one ``error: ...`` line and exit with the exception's status.

    The statuses are click's (2 a bad option, 1 any other
    :class:`click.ClickException`, or the status the exception carries);
    :attr:`abort_exit` is Ctrl-C's where no command handles it, and 1 that of
    PyTensor's start in a bad environment (:class:`untapped.startup.StartupError`)
    where a command imports PyTensor outside :func:`one_line_errors`.
    """

    abort_exit = 130

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help(), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(self.abort_exit)
        except StartupError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@contextlib.contextmanager
def one_line_errors(*errors, exit_code=1):
    """The library's ``errors`` raised inside, as a :class:`click.ClickException` exiting with ``exit_code``.

    Also a decorator. PyTensor's start in a bad environment
    (:class:`untapped.startup.StartupError`, raised where PyTensor is first
    imported) is always one of them.
    """
    try:
        yield
    except (StartupError, *errors) as exc:
        error = click.ClickException(one_line(exc))
        error.exit_code = exit_code
        raise error from exc
