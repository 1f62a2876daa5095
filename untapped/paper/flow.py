"""The logistic flow of the encoder (paper App. A, eqs. 10-16), from the vendored Parmesan.

A diagonal-Gaussian draw ``z~`` is squashed into the box ``(a, b)^d``::

    z = a + (b - a) sigma(z~)                                     (eq. 10)
    z~ = log(u / (1 - u)),  u = clip((z - a) / (b - a), 1e-5, 1 - 1e-5)   (eqs. 12-13)
    log|det dz/dz~| = log(1e-5 + prod_i (b - a) s_i (1 - s_i)),  s = sigma(z~)   (eq. 16, as coded)

with ``exact=True`` the log-det is ``d log(b - a) + sum_i [log s_i + log(1 - s_i)]``
(eq. 16, with the paper's typo corrected: see :mod:`parmesan_compat.layers.flow`).
The box is the original's ``(-pi/2, pi/2)`` (the paper says ``[-1.5, 1.5]``).
"""

from parmesan_compat.layers.flow import (
    DEFAULT_HIGH,
    DEFAULT_LOW,
    LogisticFlowLayer,
    logistic_flow,
    logistic_flow_inverse,
    logistic_flow_log_det,
)

__all__ = [
    "DEFAULT_HIGH", "DEFAULT_LOW", "LogisticFlowLayer", "logistic_flow", "logistic_flow_inverse",
    "logistic_flow_log_det",
]  # fmt: skip
