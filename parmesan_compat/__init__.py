"""A minimal, vendored Parmesan layer set for untapped, on PyTensor.

The original code shipped a modified copy of Parmesan (github casperkaae/parmesan)
for its sampling layers, the logistic flow and the log densities. This package
holds fresh implementations of exactly the pieces the MNIST model uses:

- :mod:`parmesan_compat.distributions`: Gaussian, Bernoulli, Concrete and
  uniform log densities, with the original's epsilons and clips;
- :mod:`parmesan_compat.layers.sample`: Gaussian, Concrete and Bernoulli
  sampling layers for Lasagne whose random draws enter as explicit noise
  inputs, so the same graph can be fed seeded generators or fixed arrays;
- :mod:`parmesan_compat.layers.flow`: the logistic flow to a box and its
  log-determinant (paper App. A).

License: MIT, with Parmesan's and the original untapped's notices
(``parmesan_compat/LICENSE``).
"""
