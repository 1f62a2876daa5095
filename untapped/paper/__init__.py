"""The model as the paper writes it: read these modules in this order.

1. :mod:`~untapped.paper.densities` - log p(x|y,z), log q(z|x,y), log q(y|x) (eqs. 1-2, App. A);
2. :mod:`~untapped.paper.flow` - the logistic flow into the box (App. A, eqs. 10-16);
3. :mod:`~untapped.paper.samplers` - every random draw and its reparameterisation;
4. :mod:`~untapped.paper.networks` - the classifier, encoder and decoder (§2, App. F),
   of the dense layers of :mod:`~untapped.paper.layers`;
5. :mod:`~untapped.paper.passes` - the three passes of Alg. 1 (labeled, unlabeled, unfeatured);
6. :mod:`~untapped.paper.terms` - the five terms and the total (eqs. 3-8, 17).

:mod:`~untapped.paper.kernels` holds the few computations that the C mode
swaps for fused kernels, in stock PyTensor ops. This layer imports PyTensor,
Lasagne (on PyTensor, :mod:`parmesan_compat.backend`) and the vendored
Parmesan only: never the speed layer :mod:`untapped.fast`
(``tests/test_architecture.py`` checks). ``docs/architecture.md`` shows how the
layers fit together; ``docs/paper.md`` follows each equation into this code.

References
----------
.. [1] I. Gemp, S. Mahadevan, M. Parente. Inverting VAEs for Improved
   Generative Accuracy. 2017. Original code:
   https://github.com/all-umass/untapped (commit 30e90ab).
.. [2] D. P. Kingma, S. Mohamed, D. J. Rezende, M. Welling. Semi-supervised
   Learning with Deep Generative Models. NIPS 2014. arXiv:1406.5298.
   (M2: the labeled and unlabeled bounds, eqs. 3-4.)
.. [3] C. J. Maddison, A. Mnih, Y. W. Teh. The Concrete Distribution: A
   Continuous Relaxation of Discrete Random Variables. 2016.
   arXiv:1611.00712. (The Concrete density of q(y|x).)
.. [4] E. Jang, S. Gu, B. Poole. Categorical Reparameterization with
   Gumbel-Softmax. 2016. arXiv:1611.01144. (The Gumbel-softmax sample of y.)
"""
