"""Sparse autoencoders trained elsewhere (SAELens, sparsify, Gemma Scope, Llama Scope,
dictionary_learning), held as NumPy arrays: their own encoders reproduced, the pursuits
of :mod:`sparsecode` on their decoders, a comparison of the two, and a streaming
evaluation of any model over batches of rows.  Read them with
:func:`sparsecode.io.load_sae`."""

from sparsecode.pretrained.compare import EncoderComparison, compare_encoders
from sparsecode.pretrained.evaluation import MPSAEModel, RunningVariance, evaluate
from sparsecode.pretrained.model import ARCHITECTURES, PretrainedSAE

__all__ = ["ARCHITECTURES", "EncoderComparison", "MPSAEModel", "PretrainedSAE",
           "RunningVariance", "compare_encoders", "evaluate"]
