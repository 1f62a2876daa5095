"""What chaining optimiser steps from a port's own state does to a reference bundle (``docs/reference_format.md`` §7.6).

``python bench/reference_chaining.py [--model m2] [--seed 99] [--rows 37] [--steps 4]
[--inputs mnist] [--fraction 0.1]``

A port checked as §7.6 asks starts every step from the expected bundle's
state. One that chains its steps instead starts step 2 from its own state
after step 1, which differs from the bundle's by its own rounding. This
computes a bundle (``untapped.reference.exporting.compute``), then plays such
a port with untapped's own compiled functions:

1. step 1 is applied (``SSDGM.apply_gradients``) to the bundle's step-1
   gradients, each entry moved by ``fraction`` of its tolerance in a random
   direction: the gradients of a port that uses that fraction of them;
2. steps 2..K are chained from the state that gives (``SSDGM.step_with_noise``
   with each step's noise from the bundle).

It prints, per step and per part (``total``, ``gradients``, ``params``,
``adam/m``, ``adam/v``), the largest ``used`` (``compare``'s fraction of the
tolerance) of any dataset against the bundle.
"""

import argparse
from collections import OrderedDict

import numpy as np

from untapped.reference import comparing, exporting, tolerance


def used(name, actual, expected):
    tol = tolerance(name, expected)
    return comparing._errors(np.asarray(actual, dtype=np.float32), np.asarray(expected), tol["rtol"], tol["atol"])[2]


def part_of(name):
    """``steps/3/adam/m/...`` -> ``adam/m``; ``steps/3/gradients/...`` -> ``gradients``."""
    parts = name.split("/")
    return "/".join(parts[2:4]) if parts[2] == "adam" else parts[2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="m2")
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--rows", type=int, default=37)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--inputs", default="mnist")
    parser.add_argument("--fraction", type=float, default=0.1)
    args = parser.parse_args()
    values = exporting.compute(
        model=args.model, seed=args.seed, rows=args.rows, steps=args.steps, inputs=args.inputs
    )[0]
    ex = exporting.exporter(args.model, args.seed)
    rate = float(ex.model.learning_rate)
    batch = {k.split("/", 1)[1]: v for k, v in values.items() if k.startswith("inputs/")}
    rng = np.random.default_rng(0)
    worst = OrderedDict()

    def record(step, name, value):
        key = (step, part_of(name))
        u = used(name, value, values[name])
        if key not in worst or not (u <= worst[key][0]):
            worst[key] = (u, name)

    ex.reset()
    given = OrderedDict()
    for n in ex.param_names:
        name = f"steps/1/gradients/{n}"
        g = values[name].astype(np.float64)
        tol = tolerance(name, g)
        sign = rng.choice([-1.0, 1.0], size=g.shape)
        given[n] = (g + args.fraction * sign * (tol["atol"] + tol["rtol"] * np.abs(g))).astype(np.float32)
        record(1, name, given[n])
    ex.update(given, rate)
    for k in range(1, args.steps + 1):
        if k > 1:
            noise = {key.split("/", 3)[3]: v for key, v in values.items() if key.startswith(f"steps/{k}/noise/")}
            total, grads = ex.step(batch, noise, rate)
            record(k, f"steps/{k}/total", np.float32(total))
            for n, g in grads.items():
                record(k, f"steps/{k}/gradients/{n}", g)
        for n, v in ex.model.param_values_by_name().items():
            record(k, f"steps/{k}/params/{n}", v)
        for key, v in ex.model.optimizer_state().items():
            if key != "adam/t":
                record(k, f"steps/{k}/{key}", v)
    ex.reset()
    print(f"{args.model}, seed {args.seed}, {args.rows} {args.inputs} rows; step 1 on gradients using "
          f"{args.fraction} of their tolerance, then chained")
    for (k, part), (u, name) in worst.items():
        print(f"step {k}  {part:9s}  worst used {u:.3f}  {name}")


if __name__ == "__main__":
    main()
