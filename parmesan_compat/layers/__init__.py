"""Lasagne layers: sampling with explicit noise inputs, and the logistic flow."""

from parmesan_compat.layers.flow import LogisticFlowLayer
from parmesan_compat.layers.sample import BernoulliSampleLayer, ConcreteSampleLayer, GaussianSampleLayer

__all__ = ["BernoulliSampleLayer", "ConcreteSampleLayer", "GaussianSampleLayer", "LogisticFlowLayer"]
