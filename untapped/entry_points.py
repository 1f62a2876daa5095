"""The console scripts: the thread settings first (before NumPy loads; :mod:`untapped.threads`), then the command."""

from untapped.threads import configure_threads


def untapped():
    """``untapped``: :data:`untapped.cli.main`."""
    configure_threads()
    from untapped import cli

    cli.run(cli.main)


def reference():
    """``untapped-reference``: :func:`untapped.reference.cli.main`."""
    configure_threads()
    from untapped.reference.cli import main

    main()
