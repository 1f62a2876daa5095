"""The model as the paper writes it: read these modules in this order.

1. :mod:`~untapped.paper.densities` - log p(x|y,z), log q(z|x,y), log q(y|x) (eqs. 1-2, App. A);
2. :mod:`~untapped.paper.flow` - the logistic flow into the box (App. A, eqs. 10-16);
3. :mod:`~untapped.paper.samplers` - every random draw and its reparameterisation;
4. :mod:`~untapped.paper.networks` - the classifier, encoder and decoder (§2, App. F);
5. :mod:`~untapped.paper.passes` - the three passes of Alg. 1 (labeled, unlabeled, unfeatured);
6. :mod:`~untapped.paper.terms` - the five terms and the total (eqs. 3-8, 17).

:mod:`~untapped.paper.kernels` holds the few computations that the C mode
swaps for fused kernels, in stock PyTensor ops. This layer imports PyTensor,
Lasagne (on PyTensor, :mod:`parmesan_compat.backend`) and the vendored
Parmesan only: never the speed layer :mod:`untapped.fast`
(``tests/test_layers.py`` checks). ``docs/architecture.md`` shows how the
layers fit together.
"""
