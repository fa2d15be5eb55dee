"""Files written by the original libraries themselves, read by ``load_sae``.

SAELens' ``save_model`` (standard, standard with layer norm, topk, jumprelu, gated),
sparsify's ``save_to_disk`` (topk with and without a skip connection, groupmax) and
dictionary_learning's ``torch.save(ae.state_dict())`` with the ``config.json`` its
trainers write (AutoEncoder, AutoEncoderTopK, JumpReluAutoEncoder, GatedAutoEncoder), on
tiny SAEs with random weights; each line compares the library's own encode and
reconstruction with ``load_sae(path).encode(X)`` and ``reconstruct(X)``.

Runs in the environment described in ``check_against_libraries.py`` (PyTorch, SAELens,
sparsify and dictionary_learning installed beside sparsecode); not part of the tests.
Exits 1 when a support differs or a value differs by more than 1e-5.
"""

import json
import pathlib
import sys
import tempfile
import warnings

import numpy as np
import torch

from sparsecode.io import load_sae

D_IN, D_SAE, K = 16, 64, 4
FAILED = []


def report(X, name, acts_lib, recon_lib, path):
    sae = load_sae(path)
    a = sae.encode(X.numpy()).toarray()
    r = sae.reconstruct(X.numpy())
    al = acts_lib.detach().numpy()
    rl = recon_lib.detach().numpy()
    same = np.array_equal(a != 0, al != 0)
    da, dr = np.abs(a - al).max(), np.abs(r - rl).max()
    if not same or max(da, dr) > 1e-5:
        FAILED.append(name)
    print(f"{name:<42} {sae.architecture:<9} supports same: {same}  "
          f"max|da| {da:.1e}  max|dr| {dr:.1e}")


def randomise(module, threshold=None):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        if threshold is not None:
            threshold.copy_(torch.rand_like(threshold) * 0.3)


def saelens(X, tmp):
    from sae_lens import SAE
    from sae_lens.saes.gated_sae import GatedSAEConfig
    from sae_lens.saes.jumprelu_sae import JumpReLUSAEConfig
    from sae_lens.saes.standard_sae import StandardSAEConfig
    from sae_lens.saes.topk_sae import TopKSAEConfig

    configs = [
        ("standard", StandardSAEConfig(d_in=D_IN, d_sae=D_SAE)),
        ("standard layer_norm", StandardSAEConfig(d_in=D_IN, d_sae=D_SAE,
                                                  normalize_activations="layer_norm")),
        ("topk", TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K)),
        ("jumprelu", JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE)),
        ("gated", GatedSAEConfig(d_in=D_IN, d_sae=D_SAE)),
    ]
    for name, cfg in configs:
        sae = SAE.from_dict(cfg.to_dict())
        randomise(sae, getattr(sae, "threshold", None))
        path = tmp / f"saelens_{name.replace(' ', '_')}"
        sae.save_model(path)
        with torch.no_grad():
            f = sae.encode(X)
            report(X, f"SAELens save_model {name}", f, sae.decode(f), path)


def sparsify(X, tmp):
    from sparsify import SparseCoder, SparseCoderConfig

    for act, skip in [("topk", False), ("topk", True), ("groupmax", False)]:
        cfg = SparseCoderConfig(activation=act, num_latents=D_SAE, k=K, skip_connection=skip)
        sc = SparseCoder(D_IN, cfg)
        randomise(sc)
        path = tmp / f"sparsify_{act}_{skip}"
        sc.save_to_disk(path)
        with torch.no_grad():
            out = sc.encode(X)
            dense = torch.zeros(len(X), D_SAE).scatter_(1, out.top_indices, out.top_acts)
            recon = sc(X).sae_out
        report(X, f"sparsify save_to_disk {act} skip={skip}", dense, recon, path)


def dictionary_learning(X, tmp):
    from dictionary_learning.dictionary import (
        AutoEncoder,
        GatedAutoEncoder,
        JumpReluAutoEncoder,
    )
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    classes = [(AutoEncoder, {}), (AutoEncoderTopK, {"k": K}), (JumpReluAutoEncoder, {}),
               (GatedAutoEncoder, {})]
    for cls, extra in classes:
        ae = cls(D_IN, D_SAE, **extra)
        randomise(ae, ae.threshold if cls is JumpReluAutoEncoder else None)
        path = tmp / f"dl_{cls.__name__}"
        path.mkdir()
        # as its trainers save: the state dict, and the trainer's config
        torch.save(ae.state_dict(), path / "ae.pt")
        trainer = {"dict_class": cls.__name__, "activation_dim": D_IN, "dict_size": D_SAE,
                   "layer": 3, **extra}
        with open(path / "config.json", "w") as f:
            json.dump({"trainer": trainer, "buffer": {}}, f)
        lib = cls.from_pretrained(path / "ae.pt", **extra)
        with torch.no_grad():
            f = lib.encode(X)
            report(X, f"dictionary_learning {cls.__name__}", f, lib.decode(f), path)


def main():
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    X = torch.randn(200, D_IN)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        saelens(X, tmp)
        sparsify(X, tmp)
        dictionary_learning(X, tmp)
    if FAILED:
        print("differ:", ", ".join(FAILED))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
