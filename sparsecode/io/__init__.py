"""HDF5 files in and out, streamed in bounded memory: activations (a shuffling reader and
a resumable writer), codes, models with their training state and ITDA dictionaries;
export to SAELens; pretrained SAEs of other libraries read without PyTorch.

Every file is written at ``PATH.partial`` and renamed into place when complete.
"""

from sparsecode.io._h5 import FileFormatError, partial_path
from sparsecode.io.activations import ActivationReader, open_activations
from sparsecode.io.codes import CodesWriter, codes_settings, read_codes
from sparsecode.io.guard import OutputLock, check_not_inputs, dataset_digest
from sparsecode.io.info import file_info
from sparsecode.io.itda import load_itda, save_itda
from sparsecode.io.model import load_model, model_position, save_model
from sparsecode.io.pretrained import is_sae, load_sae
from sparsecode.io.sae_info import sae_info
from sparsecode.io.saelens import export_saelens
from sparsecode.io.sparsify import export_sparsify
from sparsecode.io.writer import ActivationWriter, write_activations

__all__ = [
    "ActivationReader",
    "ActivationWriter",
    "CodesWriter",
    "FileFormatError",
    "OutputLock",
    "check_not_inputs",
    "codes_settings",
    "dataset_digest",
    "export_saelens",
    "export_sparsify",
    "file_info",
    "is_sae",
    "load_itda",
    "load_model",
    "load_sae",
    "model_position",
    "open_activations",
    "partial_path",
    "read_codes",
    "sae_info",
    "save_itda",
    "save_model",
    "write_activations",
]
