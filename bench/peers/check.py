"""Check a peer against untapped with a reference bundle (``docs/reference_format.md`` §8).

    python bench/peers/check.py EXPECTED.h5 --peer jax|torch|torch-compile [--out THEIRS.h5]

The peer reads the bundle's initial parameters, inputs and noise, computes
with its own training step what a port computes (the forward arrays, the
five terms, the total and the gradient; step 1's total, raw gradient, new
parameters and Adam state; the same at the edge section's parameters, and
its update cases) and writes them in the bundle format; then
``untapped-reference compare EXPECTED THEIRS`` runs on them. The exit status
is compare's (0: every dataset within tolerance). Export the bundle with
``untapped-reference export EXPECTED.h5 --steps 1``: a peer checks the first
step only (later steps start from untapped's state, §7.6).
"""

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import read_bundle, write_bundle  # noqa: E402

PEERS = ("jax", "torch", "torch-compile")


def peer_module(peer):
    """The peer's module and, for PyTorch, whether its step is compiled."""
    if peer == "jax":
        import peer_jax

        return peer_jax, {}
    import peer_torch

    return peer_torch, dict(compiled=peer == "torch-compile")


def write_peer_bundle(expected, out, peer):
    """Compute the peer's datasets on ``expected``'s given data and write them to ``out``; their number."""
    bundle = read_bundle(expected)
    module, options = peer_module(peer)
    datasets = module.first_step(bundle, **options)
    names = ", ".join(f"{k} {v}" for k, v in module.versions().items())
    write_bundle(out, datasets, bundle["model"], producer=f"untapped bench/peers ({peer}; {names})")
    return len(datasets)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("expected", help="a reference bundle written by untapped-reference export")
    parser.add_argument("--peer", choices=PEERS, required=True)
    parser.add_argument("--out", help="where to write the peer's bundle (default: a temporary file)")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.expected):
        parser.error(f"{args.expected}: no such file")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or os.path.join(tmp, f"{args.peer}.h5")
        try:
            n = write_peer_bundle(args.expected, out, args.peer)
        except (ValueError, KeyError, OSError) as e:
            parser.exit(2, f"error: {e}\n")
        print(f"wrote {n} datasets ({args.peer})", flush=True)
        compare = [sys.executable, "-m", "untapped.reference", "compare", args.expected, out, "--failures"]
        return subprocess.run(compare).returncode


if __name__ == "__main__":
    sys.exit(main())
