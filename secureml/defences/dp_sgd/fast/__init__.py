"""Fast per-example clipping for DP-SGD: per-example gradient norms and the clipped sum from one
ordinary backward pass, for chains of Dense, Conv2D, Embedding and LSTM layers.

`fast_clipping_support(model, objective)` says whether a model can use it (and if not, which
layer or objective stops it); `FastClippingEngine` is the gradient engine DP-SGD selects then.
See docs/fast-clipping.md for the method and its measured cost.
"""
from .engine import FastClippingEngine, fast_clipping_support, per_example_gradient_norms

__all__ = ["FastClippingEngine", "fast_clipping_support", "per_example_gradient_norms"]
