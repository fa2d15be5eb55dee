"""Pretrained SAEs written from NumPy in each library's on-disk format, by the formats'
documented keys and shapes: the fixtures of the loader, command-line and export tests.

Each writer takes the weights as this project names them (``W_enc`` (d, m), ``W_dec``
(m, d), ...) and writes them as the library does (its key names, its orientation, its
config), so a reader that confuses an orientation or a key fails.
"""

import json
from pathlib import Path

import numpy as np

from sparsecode.io.safetensors import write_tensors
from tests.torch_files import write_torch_archive


def random_weights(d, m, *, seed=0, dtype=np.float32, unit=True):
    """Weights of a random SAE: ``W_dec`` (unit rows by default), ``W_enc = W_dec^T``
    plus noise, small biases and thresholds, gated parameters."""
    rng = np.random.default_rng(seed)
    W_dec = rng.standard_normal((m, d))
    if unit:
        W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    W_enc = W_dec.T + 0.1 * rng.standard_normal((d, m))
    w = {"W_dec": W_dec, "W_enc": W_enc, "b_enc": 0.05 * rng.standard_normal(m),
         "b_dec": 0.1 * rng.standard_normal(d), "threshold": 0.2 * rng.random(m),
         "b_gate": 0.05 * rng.standard_normal(m), "b_mag": 0.05 * rng.standard_normal(m),
         "r_mag": 0.1 * rng.standard_normal(m)}
    return {k: v.astype(dtype) for k, v in w.items()}


def _json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)


def write_saelens(folder, w, architecture="standard", *, k=None, version="6.5.0",
                  normalize="none", apply_b_dec_to_input=True, bfloat16=(), extra=None,
                  pre6=False, sparsity=None):
    """SAELens: ``cfg.json`` + ``sae_weights.safetensors`` (+ ``sparsity.safetensors``).
    ``pre6`` writes a config of SAELens before 6.0 (``hook_point``,
    ``activation_fn_str``, ``activation_fn_kwargs.k``, no ``architecture`` for a TopK or
    standard SAE, a boolean ``normalize_activations`` when ``normalize`` is a bool)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d, m = w["W_enc"].shape if "W_enc" in w else w["W_dec"].shape[::-1]
    names = {"standard": ("W_enc", "b_enc"), "topk": ("W_enc", "b_enc"),
             "jumprelu": ("W_enc", "b_enc", "threshold"),
             "gated": ("W_enc", "b_gate", "b_mag", "r_mag"), "matching_pursuit": ()}
    tensors = {n: w[n] for n in ("W_dec", "b_dec") + names[architecture]}
    write_tensors(folder / "sae_weights.safetensors", tensors, bfloat16=bfloat16)
    if pre6:
        cfg = {"d_in": int(d), "d_sae": int(m), "dtype": "float32",
               "hook_point": "blocks.2.hook_resid_pre", "hook_point_layer": 2,
               "model_name": "gpt2-small", "apply_b_dec_to_input": apply_b_dec_to_input,
               "normalize_activations": normalize, "sae_lens_training_version": "3.12.0",
               "activation_fn_str": "topk" if architecture == "topk" else "relu"}
        if architecture == "topk":
            cfg["activation_fn_kwargs"] = {"k": k}
        elif architecture != "standard":
            cfg["architecture"] = architecture
    else:
        cfg = {"architecture": architecture, "d_in": int(d), "d_sae": int(m),
               "dtype": "float32", "device": "cpu",
               "apply_b_dec_to_input": apply_b_dec_to_input,
               "normalize_activations": normalize, "reshape_activations": "none",
               "metadata": {"sae_lens_version": version,
                            "hook_name": "blocks.2.hook_resid_post",
                            "model_name": "gpt2-small"}}
        if k is not None:
            cfg["k"] = k
    cfg.update(extra or {})
    _json(folder / "cfg.json", cfg)
    if sparsity is not None:
        write_tensors(folder / "sparsity.safetensors", {"sparsity": sparsity})
    return folder


def write_sparsify(folder, w, *, k, activation="topk", W_skip=None, bfloat16=(),
                   hookpoint="layers.3"):
    """sparsify: ``HOOKPOINT/cfg.json`` + ``HOOKPOINT/sae.safetensors`` with
    ``encoder.weight`` (m, d), ``encoder.bias``, ``W_dec`` (m, d), ``b_dec`` and optionally
    ``W_skip`` (d, d).  Returns the hookpoint folder."""
    folder = Path(folder) / hookpoint
    folder.mkdir(parents=True, exist_ok=True)
    d, m = w["W_enc"].shape
    tensors = {"encoder.weight": np.ascontiguousarray(w["W_enc"].T),
               "encoder.bias": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    if W_skip is not None:
        tensors["W_skip"] = W_skip
    write_tensors(folder / "sae.safetensors", tensors, bfloat16=bfloat16)
    _json(folder / "cfg.json", {"activation": activation, "expansion_factor": m // d,
                                "normalize_decoder": True, "num_latents": int(m),
                                "k": int(k), "multi_topk": False,
                                "skip_connection": W_skip is not None, "transcode": False,
                                "d_in": int(d)})
    return folder


def write_gemma_scope(folder, w):
    """Gemma Scope: ``params.npz`` with ``W_enc`` (d, m), ``W_dec`` (m, d), ``b_enc``,
    ``b_dec``, ``threshold``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "params.npz", **{n: w[n] for n in ("W_enc", "W_dec", "b_enc", "b_dec",
                                                          "threshold")})
    return folder


def write_gemma_scope_2(folder, w, bfloat16=()):
    """Gemma Scope 2: ``params.safetensors`` with lowercase keys ``w_enc``, ``w_dec``,
    ``b_enc``, ``b_dec``, ``threshold``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_tensors(folder / "params.safetensors",
                  {n.lower(): w[n] for n in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")},
                  bfloat16=[n.lower() for n in bfloat16])
    return folder


def write_llama_scope(folder, w, *, threshold=0.3, norm_in=None, act_fn="jumprelu", k=None,
                      bfloat16=()):
    """Llama Scope: ``hyperparams.json`` + ``checkpoints/final.safetensors`` in
    ``nn.Linear`` layout (``encoder.weight`` (m, d), ``decoder.weight`` (d, m))."""
    folder = Path(folder)
    d, m = w["W_enc"].shape
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    tensors = {"encoder.weight": np.ascontiguousarray(w["W_enc"].T),
               "encoder.bias": w["b_enc"],
               "decoder.weight": np.ascontiguousarray(w["W_dec"].T),
               "decoder.bias": w["b_dec"]}
    write_tensors(folder / "checkpoints" / "final.safetensors", tensors, bfloat16=bfloat16)
    cfg = {"d_model": int(d), "d_sae": int(m), "act_fn": act_fn,
           "jump_relu_threshold": threshold, "hook_point_in": "blocks.4.hook_resid_post",
           "hook_point_out": "blocks.4.hook_resid_post", "use_decoder_bias": True,
           "norm_activation": "dataset-wise" if norm_in else "inference",
           "dataset_average_activation_norm": {"in": norm_in, "out": norm_in},
           "sparsity_include_decoder_norm": True}
    if k is not None:
        cfg["top_k"] = k
    _json(folder / "hyperparams.json", cfg)
    return folder


def write_dictionary_learning(folder, w, dict_class="AutoEncoder", *, k=None,
                              threshold=None, bfloat16=(), state=None):
    """dictionary_learning: ``config.json`` + ``ae.pt`` (a ``torch.save`` archive of the
    class's ``state_dict``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d, m = w["W_enc"].shape
    linear = {"encoder.weight": np.ascontiguousarray(w["W_enc"].T),
              "decoder.weight": np.ascontiguousarray(w["W_dec"].T)}
    if state is None:
        if dict_class == "AutoEncoder":
            state = {"bias": w["b_dec"], **linear, "encoder.bias": w["b_enc"]}
        elif dict_class == "AutoEncoderNew":
            state = {**linear, "encoder.bias": w["b_enc"], "decoder.bias": w["b_dec"]}
        elif dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
            state = {"k": np.array(k, dtype=np.int32),
                     "threshold": np.array(-1.0 if threshold is None else threshold,
                                           dtype=np.float32),
                     **linear, "encoder.bias": w["b_enc"], "b_dec": w["b_dec"]}
        elif dict_class == "JumpReluAutoEncoder":
            state = {n: w[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
        elif dict_class == "GatedAutoEncoder":
            state = {"decoder_bias": w["b_dec"], "r_mag": w["r_mag"],
                     "gate_bias": w["b_gate"], "mag_bias": w["b_mag"], **linear}
        else:
            raise ValueError(dict_class)
    # as the library saves it: torch.save(ae.state_dict()), plain tensors
    write_torch_archive(folder / "ae.pt", state, bfloat16=bfloat16)
    trainer = {"dict_class": dict_class, "activation_dim": int(d), "dict_size": int(m),
               "lm_name": "EleutherAI/pythia-70m-deduped", "layer": 3,
               "submodule_name": "resid_post_layer_3"}
    if k is not None:
        trainer["k"] = k
    _json(folder / "config.json", {"trainer": trainer, "buffer": {"ctx_len": 128}})
    return folder
