"""Sparse autoencoders trained elsewhere (SAELens, sparsify, Gemma Scope, Llama Scope,
dictionary_learning), held as NumPy arrays: their own encoders reproduced, the pursuits
of :mod:`sparsecode` on their decoders, and a comparison of the two.  Read them with
:func:`sparsecode.io.load_sae`."""

from sparsecode.pretrained.compare import EncoderComparison, compare_encoders
from sparsecode.pretrained.model import ARCHITECTURES, PretrainedSAE

__all__ = ["ARCHITECTURES", "EncoderComparison", "PretrainedSAE", "compare_encoders"]
