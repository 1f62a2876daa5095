"""Reference bundles: what untapped computes, array by array, for ports to check against.

A *bundle* is an HDF5 file holding a small fixed batch, every noise array the
graph consumes, the initial parameters, every intermediate of the forward
pass, the five terms and the total, the gradient of the total for every
parameter, and the parameters and Adam state after a few optimiser steps, each
step with its own given noise. Every dataset carries the tolerance a port is
held to. The format is specified in ``docs/reference_format.md`` (written so
that a bundle can be produced from another framework without reading this
code); :data:`FORMAT_VERSION` is its version.

Command line (``untapped-reference`` or ``python -m untapped.reference``)::

    untapped-reference export OUT.h5 [--model untapped|m2] [--seed S] [--rows N] [--steps K]
    untapped-reference compare EXPECTED.h5 ACTUAL.h5 [--json] [--failures]
    untapped-reference describe FILE.h5

The modules, in the order data flow through them:

- :mod:`~untapped.reference.bundle`: the format's name and version, writing
  a bundle, opening and reading one, :class:`BundleError`;
- :mod:`~untapped.reference.tolerances`: the kind of every dataset name and
  its tolerances (format §6);
- :mod:`~untapped.reference.inputs`: the generators, the fixed batch (MNIST
  rows when MNIST is found, never downloaded unless asked, else a documented
  synthetic batch) and the noise, whose Bernoulli uniforms are moved at least
  :data:`BERNOULLI_MARGIN` from the decoder means they are compared with, so
  that no float32 port can flip a sample by rounding (§4, §5);
- :mod:`~untapped.reference.edge`: the edge section's parameters, inputs and
  noise, chosen to reach every clip and epsilon of the math, and its three
  update cases (§7.7, §7.8);
- :mod:`~untapped.reference.exporting`: the values, from the model's own
  compiled functions (:class:`untapped.model.SSDGM`), collected into a bundle
  and written;
- :mod:`~untapped.reference.comparing`: one bundle against another, dataset
  by dataset;
- :mod:`~untapped.reference.reports`: a comparison as text or JSON, a
  bundle's layout;
- :mod:`~untapped.reference.cli`: the command line.
"""

from untapped.reference.bundle import FORMAT, FORMAT_VERSION, READABLE_VERSIONS, Bundle, BundleError, write_bundle
from untapped.reference.cli import main
from untapped.reference.comparing import compare
from untapped.reference.edge import EDGE_ROWS, EDGE_UPDATES, edge_inputs, edge_params, edge_update_gradients
from untapped.reference.exporting import Exporter, compute, export, exporter
from untapped.reference.inputs import (
    BERNOULLI_MARGIN,
    INPUT_SOURCES,
    draw_noise,
    inputs_line,
    make_inputs,
    separate_bernoulli_uniforms,
)
from untapped.reference.reports import describe, format_report, report_json
from untapped.reference.tolerances import TOLERANCES, kind_of, tolerance

__all__ = [
    "BERNOULLI_MARGIN",
    "EDGE_ROWS",
    "EDGE_UPDATES",
    "FORMAT",
    "FORMAT_VERSION",
    "INPUT_SOURCES",
    "READABLE_VERSIONS",
    "TOLERANCES",
    "Bundle",
    "BundleError",
    "Exporter",
    "compare",
    "compute",
    "describe",
    "draw_noise",
    "edge_inputs",
    "edge_params",
    "edge_update_gradients",
    "export",
    "exporter",
    "format_report",
    "inputs_line",
    "kind_of",
    "main",
    "make_inputs",
    "report_json",
    "separate_bernoulli_uniforms",
    "tolerance",
    "write_bundle",
]
