"""What the command lines share: errors as one ``error: ...`` line on stderr, never a traceback.

``run_mnist.py`` and ``untapped-reference`` each subclass :class:`OneLineErrors`
with their own exit statuses.
"""

import sys

import click

from untapped.files import one_line
from untapped.startup import StartupError


class OneLineErrors(click.Group):
    """A click group whose errors print as one ``error: ...`` line and exit non-zero.

    Class attributes set the exit statuses: :attr:`click_exit` for click's
    own errors (``None``: click's status, 2 for a bad option), :attr:`abort_exit`
    for Ctrl-C at a prompt, and :attr:`error_exit` for the library errors
    listed in :attr:`errors` that reach the group, and for PyTensor's start
    in a bad environment (:class:`untapped.startup.StartupError`).
    """

    click_exit = None
    abort_exit = 130
    error_exit = 1
    errors = ()

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(self.abort_exit)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
            sys.exit(self.click_exit or exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(self.click_exit or exc.exit_code)
        except (StartupError, *self.errors) as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(self.error_exit)
        sys.exit(code if isinstance(code, int) else 0)
