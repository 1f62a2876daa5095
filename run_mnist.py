#!/usr/bin/env python
"""Train untapped and/or M2 on the paper's MNIST task and report the digits 5-9 metric.

The same command as ``untapped train`` (and ``python run_mnist.py report
FOLDER`` as ``untapped report FOLDER``): :data:`untapped.cli.run_mnist`.
Every option can also be set through an ``UNTAPPED_<OPTION>`` environment
variable (``UNTAPPED_EPOCHS``, ``UNTAPPED_DATA_DIR`` ...). Errors are one
line on stderr (``error: ...``) with a non-zero exit status; no traceback.
"""

import untapped

untapped.configure_threads()  # before NumPy loads (untapped.threads)

from untapped import cli  # noqa: E402

main = cli.run_mnist

if __name__ == "__main__":
    cli.run(main)
