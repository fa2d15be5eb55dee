"""One reader per published SAE format (see :func:`sparsecode.io.load_sae`): the keys,
shapes and encoder semantics of each, mapped onto a ``PretrainedSAE``."""

import json
import math

import numpy as np

from sparsecode.io._h5 import FileFormatError
from sparsecode.pretrained import PretrainedSAE


def read_json(path):
    """A JSON object from ``path``; one clear error when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(value, dict):
        raise FileFormatError(f"{path}: expected a JSON object; got {type(value).__name__}")
    return value



class Weights:
    """Named tensors of one file, taken with clear errors.

    Parameters
    ----------
    path : pathlib.Path
        The file (for messages).
    arrays : dict of str to ndarray
    dtype : numpy.dtype
        Floating tensors are returned in it.
    """

    def __init__(self, path, arrays, dtype):
        self.path = path
        self.arrays = arrays
        self.dtype = dtype

    def has(self, name):
        return name in self.arrays

    def get(self, name, shape=None, *, optional=False, transposable=False):
        """Tensor ``name`` (None when ``optional`` and absent), checked against ``shape``
        (a tuple; with ``transposable``, a 2-D tensor of the reversed shape is transposed:
        the file's orientation inferred from its shape)."""
        if name not in self.arrays:
            if optional:
                return None
            raise FileFormatError(f"{self.path}: no tensor {name!r}; it holds "
                                  f"{', '.join(sorted(self.arrays)) or 'none'}")
        a = self.arrays[name]
        if not isinstance(a, np.ndarray):
            raise FileFormatError(f"{self.path}: {name!r} is not a tensor")
        if shape is not None and a.shape != tuple(shape):
            if transposable and a.ndim == 2 and a.shape == tuple(shape)[::-1]:
                a = a.T
            else:
                raise FileFormatError(f"{self.path}: {name!r} has shape {a.shape}; the SAE's "
                                      f"sizes need {tuple(shape)}")
        if a.dtype.kind == "f" and a.dtype != self.dtype:
            a = a.astype(self.dtype)
        return a


def _safetensors(path, dtype):
    from sparsecode.io.safetensors import read_tensors

    return Weights(path, read_tensors(path, dtype=dtype), dtype)


def _size(cfg, key, path, what):
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FileFormatError(f"{path}: {what} {key!r} must be a positive integer; got "
                              f"{value!r}")
    return value


def _sizes_from(W, what, path):
    if W.ndim != 2:
        raise FileFormatError(f"{path}: {what} must be 2-D; got shape {W.shape}")
    return W.shape


def _build(path, **kwargs):
    try:
        return PretrainedSAE(**kwargs)
    except (ValueError, TypeError) as exc:
        raise FileFormatError(f"{path}: {exc}") from None


# ---- SAELens -----------------------------------------------------------------------------

_SAELENS_ARCH = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu",
                 "gated": "gated", "matching_pursuit": "matching_pursuit"}
_SAELENS_NORMS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")


def saelens_config(cfg):
    """A SAELens config in its 6.0 form: configs written before 6.0 renamed and defaulted
    as SAELens does (``hook_point`` -> ``hook_name``, ``activation_fn_str`` ->
    ``activation_fn``, architecture ``standard`` unless ``topk`` with a ``k``, boolean
    ``normalize_activations``)."""
    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get(
        "sae_lens_version")
    major = None
    if isinstance(version, str) and version[:1].isdigit():
        major = int(version.split(".")[0])
    cfg = dict(cfg)
    if major is None or major < 6:
        renames = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index",
                   "activation_fn_str": "activation_fn"}
        cfg = {renames.get(k, k): v for k, v in cfg.items()}
        cfg.setdefault("apply_b_dec_to_input", True)
        cfg.setdefault("architecture", "standard")
        k = (cfg.get("activation_fn_kwargs") or {}).get("k")
        if cfg.get("activation_fn") == "topk" and k is not None:
            cfg["architecture"] = "topk"
            cfg["k"] = k
        norm = cfg.get("normalize_activations")
        if isinstance(norm, bool):
            cfg["normalize_activations"] = "expected_average_only_in" if norm else "none"
    if cfg.get("normalize_activations") is None:
        cfg["normalize_activations"] = "none"
    return cfg


def read_saelens(path, dtype):
    cfg_path = path / "cfg.json"
    cfg = saelens_config(read_json(cfg_path))
    arch = cfg.get("architecture")
    if arch not in _SAELENS_ARCH:
        raise FileFormatError(f"{cfg_path}: architecture {arch!r} is not one sparsecode "
                              f"reads; it reads {', '.join(_SAELENS_ARCH)}")
    d = _size(cfg, "d_in", cfg_path, "config")
    m = _size(cfg, "d_sae", cfg_path, "config")
    norm = cfg["normalize_activations"]
    if norm not in _SAELENS_NORMS:
        raise FileFormatError(f"{cfg_path}: normalize_activations {norm!r} is unknown; "
                              f"expected one of {', '.join(_SAELENS_NORMS)}")
    w = _safetensors(path / "sae_weights.safetensors", dtype)
    kw = {"W_dec": w.get("W_dec", (m, d)), "b_dec": w.get("b_dec", (d,)),
          "architecture": _SAELENS_ARCH[arch],
          "apply_b_dec_to_input": bool(cfg.get("apply_b_dec_to_input", True)),
          # expected_average_only_in: SAELens folds the factor into the weights when it
          # knows it and otherwise runs the SAE on raw activations, as here
          "normalize": "none" if norm == "expected_average_only_in" else norm}
    if arch == "matching_pursuit":
        kw.update(max_iterations=cfg.get("max_iterations") or d,
                  residual_threshold=cfg.get("residual_threshold", 1e-2),
                  stop_on_duplicate_support=cfg.get("stop_on_duplicate_support", True))
    else:
        kw["W_enc"] = w.get("W_enc", (d, m))
    if arch in ("standard", "topk", "jumprelu"):
        kw["b_enc"] = w.get("b_enc", (m,))
    if arch == "topk":
        kw["k"] = cfg.get("k")
        kw["rescale_acts_by_decoder_norm"] = bool(cfg.get("rescale_acts_by_decoder_norm",
                                                          False))
    elif arch == "jumprelu":
        if w.has("threshold"):
            kw["threshold"] = w.get("threshold", (m,))
        else:
            kw["threshold"] = np.exp(w.get("log_threshold", (m,)))
    elif arch == "gated":
        kw.update(b_gate=w.get("b_gate", (m,)), b_mag=w.get("b_mag", (m,)),
                  r_mag=w.get("r_mag", (m,)))
    info = {"config": cfg, "hookpoint": cfg.get("hook_name")
            or (cfg.get("metadata") or {}).get("hook_name")}
    sparsity = path / "sparsity.safetensors"
    if sparsity.is_file():
        s = _safetensors(sparsity, dtype)
        name = next(iter(s.arrays), None)
        if name is not None:
            info["log_sparsity"] = np.array(s.get(name, (m,)))
    return _build(path, info=info, **kw)


# ---- sparsify ----------------------------------------------------------------------------

def read_sparsify(path, dtype):
    cfg_path = path / "cfg.json"
    cfg = read_json(cfg_path)
    if cfg.get("transcode"):
        raise FileFormatError(f"{cfg_path}: a transcoder (it predicts another layer's "
                              "output), not an SAE; sparsecode reads SAEs")
    d = _size(cfg, "d_in", cfg_path, "config")
    m = cfg.get("num_latents") or d * cfg.get("expansion_factor", 32)
    activation = cfg.get("activation", "topk")
    if activation not in ("topk", "groupmax"):
        raise FileFormatError(f"{cfg_path}: activation {activation!r} is unknown; expected "
                              "topk or groupmax")
    w = _safetensors(path / "sae.safetensors", dtype)
    W_enc = w.get("encoder.weight", (m, d), transposable=True)
    W_skip = w.get("W_skip", (d, d), optional=True)
    return _build(path, W_dec=w.get("W_dec", (m, d), transposable=True),
                  b_dec=w.get("b_dec", (d,)), W_enc=W_enc.T,
                  b_enc=w.get("encoder.bias", (m,)), architecture=activation,
                  k=_size(cfg, "k", cfg_path, "config"), W_skip=W_skip,
                  apply_b_dec_to_input=True,
                  info={"config": cfg, "hookpoint": path.name})


# ---- Gemma Scope ---------------------------------------------------------------------------

def _gemma(path, w, cfg=None):
    W_dec = w.get("w_dec")
    m, d = _sizes_from(W_dec, "w_dec", w.path)
    return _build(path, W_dec=W_dec, b_dec=w.get("b_dec", (d,)), W_enc=w.get("w_enc", (d, m)),
                  b_enc=w.get("b_enc", (m,)), threshold=w.get("threshold", (m,)),
                  architecture="jumprelu", apply_b_dec_to_input=False,
                  info={"config": cfg or {}})


def read_gemma_scope(path, dtype):
    file = path / "params.npz"
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {name.lower(): z[name] for name in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise FileFormatError(f"{file}: not a readable .npz archive ({exc})") from None
    return _gemma(path, Weights(file, arrays, dtype))


def read_gemma_scope_2(path, dtype):
    w = _safetensors(path / "params.safetensors", dtype)
    w.arrays = {name.lower(): a for name, a in w.arrays.items()}
    cfg = read_json(path / "config.json") if (path / "config.json").is_file() else {}
    return _gemma(path, w, cfg)


# ---- Llama Scope ---------------------------------------------------------------------------

_LLAMA_NORMS = {"dataset-wise": "scale", "token-wise": "constant_norm_rescale",
                "inference": "none", "none": "none"}


def read_llama_scope(path, dtype):
    cfg_path = path / "hyperparams.json"
    cfg = read_json(cfg_path)
    d = _size(cfg, "d_model", cfg_path, "hyperparameter")
    m = _size(cfg, "d_sae", cfg_path, "hyperparameter")
    norm = cfg.get("norm_activation", "dataset-wise")
    if norm not in _LLAMA_NORMS:
        raise FileFormatError(f"{cfg_path}: norm_activation {norm!r} is unknown; expected "
                              f"one of {', '.join(_LLAMA_NORMS)}")
    scale = 1.0
    kw = {"normalize": _LLAMA_NORMS[norm]}
    if norm == "dataset-wise":
        avg = (cfg.get("dataset_average_activation_norm") or {}).get("in")
        if not isinstance(avg, (int, float)) or not avg > 0:
            raise FileFormatError(f"{cfg_path}: dataset-wise normalisation needs a positive "
                                  "dataset_average_activation_norm.in")
        scale = math.sqrt(d) / avg
        kw["norm_scale"] = scale
    w = _safetensors(path / "checkpoints" / "final.safetensors", dtype)
    act = cfg.get("act_fn", "jumprelu")
    if act == "jumprelu":
        thr = cfg.get("jump_relu_threshold")
        if not isinstance(thr, (int, float)):
            raise FileFormatError(f"{cfg_path}: act_fn jumprelu needs jump_relu_threshold")
        # one threshold for every atom, in the units of the normalised input (SAELens)
        kw.update(architecture="jumprelu", threshold=thr * scale)
    elif act == "topk":
        kw.update(architecture="topk", k=cfg.get("top_k"))
    elif act == "relu":
        kw["architecture"] = "relu"
    else:
        raise FileFormatError(f"{cfg_path}: act_fn {act!r} is unknown; expected jumprelu, "
                              "topk or relu")
    return _build(path, W_dec=w.get("decoder.weight", (d, m)).T,
                  b_dec=w.get("decoder.bias", (d,), optional=True),
                  W_enc=w.get("encoder.weight", (m, d)).T, b_enc=w.get("encoder.bias", (m,)),
                  apply_b_dec_to_input=False,
                  info={"config": cfg, "hookpoint": cfg.get("hook_point_in")}, **kw)


# ---- dictionary_learning -------------------------------------------------------------------

def read_dictionary_learning(path, dtype):
    from sparsecode.io.torch_archive import read_torch_archive

    cfg = read_json(path / "config.json")
    trainer = cfg.get("trainer") or {}
    state = read_torch_archive(path / "ae.pt")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"],
                                                                        dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FileFormatError(f"{path / 'ae.pt'}: expected a state dict; got "
                              f"{type(state).__name__}")
    w = Weights(path / "ae.pt", dict(state), dtype)
    cls = trainer.get("dict_class") or _guess_class(w)
    d = trainer.get("activation_dim")
    m = trainer.get("dict_size")
    info = {"config": cfg, "hookpoint": trainer.get("submodule_name")
            or (f"layer {trainer['layer']}" if "layer" in trainer else None)}
    if cls in ("JumpReluAutoEncoder", "MatryoshkaBatchTopKSAE"):
        W_enc = w.get("W_enc")
        d, m = _sizes_from(W_enc, "W_enc", w.path)
        kw = {"W_enc": W_enc, "b_enc": w.get("b_enc", (m,)), "W_dec": w.get("W_dec", (m, d)),
              "b_dec": w.get("b_dec", (d,))}
    else:
        W = w.get("encoder.weight")
        m, d = _sizes_from(W, "encoder.weight", w.path)
        kw = {"W_enc": W.T, "W_dec": w.get("decoder.weight", (d, m)).T}
        if cls != "GatedAutoEncoder":
            kw["b_enc"] = w.get("encoder.bias", (m,))
    if cls == "AutoEncoder":
        kw.update(architecture="relu", b_dec=w.get("bias", (d,)))
        _unit_decoder(kw)
    elif cls == "AutoEncoderNew":
        kw.update(architecture="relu", b_dec=w.get("decoder.bias", (d,)),
                  apply_b_dec_to_input=False)
    elif cls == "AutoEncoderTopK":
        kw.update(architecture="topk", b_dec=w.get("b_dec", (d,)), k=_k(w, trainer))
    elif cls in ("BatchTopKSAE", "MatryoshkaBatchTopKSAE"):
        # inference as the library runs it: relu(pre) kept above the learned threshold
        kw.update(architecture="jumprelu", threshold=float(np.asarray(w.get("threshold"))),
                  b_dec=kw.get("b_dec", w.get("b_dec", (d,), optional=True)))
    elif cls == "JumpReluAutoEncoder":
        kw.update(architecture="jumprelu", threshold=w.get("threshold", (m,)),
                  apply_b_dec_to_input=bool(trainer.get("apply_b_dec_to_input", False)))
    elif cls == "GatedAutoEncoder":
        kw.update(architecture="gated", b_dec=w.get("decoder_bias", (d,)),
                  b_gate=w.get("gate_bias", (m,)), b_mag=w.get("mag_bias", (m,)),
                  r_mag=w.get("r_mag", (m,)))
    else:
        raise FileFormatError(f"{path / 'config.json'}: dict_class {cls!r} is not one "
                              "sparsecode reads")
    for name, value in (("activation_dim", d), ("dict_size", m)):
        if trainer.get(name) not in (None, value):
            raise FileFormatError(f"{path / 'config.json'}: {name} {trainer[name]} "
                                  f"contradicts the weights ({value})")
    return _build(path, info=info, **kw)


def _k(w, trainer):
    if w.has("k"):
        return int(np.asarray(w.arrays["k"]))
    if "k" in trainer:
        return trainer["k"]
    raise FileFormatError(f"{w.path}: a TopK SAE without k (neither a 'k' tensor nor "
                          "trainer.k in config.json)")


def _guess_class(w):
    if w.has("W_enc") and w.has("threshold"):
        return "JumpReluAutoEncoder"
    if w.has("r_mag"):
        return "GatedAutoEncoder"
    if w.has("k"):
        return "AutoEncoderTopK"
    if w.has("bias"):
        return "AutoEncoder"
    return None


def _unit_decoder(kw):
    """dictionary_learning's ``AutoEncoder.from_pretrained`` (``normalize_decoder=True``,
    its default): decoder rows scaled to unit norm, encoder columns and bias by the same
    norms, so the reconstruction is unchanged and activations are in units of unit atoms."""
    W_dec = kw["W_dec"]
    norms = np.sqrt(np.einsum("ij,ij->i", W_dec, W_dec, dtype=np.float64))
    if np.allclose(norms, 1.0) or not np.all(norms > 0):
        return
    kw["W_dec"] = (W_dec / norms[:, None]).astype(W_dec.dtype)
    kw["W_enc"] = (kw["W_enc"] * norms[None, :]).astype(W_dec.dtype)
    kw["b_enc"] = (kw["b_enc"] * norms).astype(W_dec.dtype)
