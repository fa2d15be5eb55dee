"""Stream a transformer's residual-stream activations into an HDF5 file for sparsecode.

NEEDS PYTORCH (``pip install torch``).  PyTorch is a dependency of this example only:
sparsecode itself never imports it, and reads the file this script writes with NumPy
and h5py alone.

What it does:

1. Builds a small causal transformer language model with PyTorch (token and position
   embeddings, ``torch.nn.TransformerEncoder`` with pre-norm blocks, an output head)
   and trains it briefly on a synthetic token stream (a sparse random Markov chain over
   256 tokens with recurring motifs), so that its activations have structure.  Nothing is
   downloaded.
2. Registers a forward hook on one block (``--layer``): the block's output is the
   residual stream after it, ``(batch, tokens, d_model)``.  The hook appends it, one row
   per token, to ``sparsecode.io.ActivationWriter`` in bfloat16 (or ``--dtype float16``),
   so activations stream to disk batch by batch and never sit in memory together.  The
   file is written at ``OUT.partial`` and renamed to ``OUT`` when complete.
3. Prints the ``sparsecode train`` command to run on it (``examples/train_on_activations.sh``
   runs the whole chain: this script, ``train``, ``encode`` and ``info``).

With ``--hf-model NAME`` and the ``transformers`` package installed, a Hugging Face model
is used instead (``AutoModel.from_pretrained(NAME)``, hidden states from
``output_hidden_states=True``, fed with synthetic token ids); this needs the model's
weights to be downloadable or cached, and is not exercised by the tests.

Run from the repository root::

    python examples/activations_to_hdf5.py --out acts.h5             # 262,144 tokens, ~15 s
    python examples/activations_to_hdf5.py --out acts.h5 --quick     # 16,384 tokens, ~5 s
    sparsecode train acts.h5 --dataset resid --atoms 256 --k 8 --out model.h5
"""

import argparse
import time
from pathlib import Path

import numpy as np

VOCAB = 256


def token_stream(n_sequences, seq_len, seed):
    """Synthetic "text": a sparse random Markov chain over VOCAB tokens, with motifs.

    Each token has 4 likely successors; with probability 0.2 a sequence position starts
    one of 16 fixed motifs of 8 tokens.  Returns int64 array (n_sequences, seq_len).
    """
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, VOCAB, size=(VOCAB, 4))
    probs = rng.dirichlet(np.ones(4), size=VOCAB)
    motifs = rng.integers(0, VOCAB, size=(16, 8))
    out = np.empty((n_sequences, seq_len), dtype=np.int64)
    for s in range(n_sequences):
        t = 0
        tok = rng.integers(VOCAB)
        while t < seq_len:
            if rng.random() < 0.2:
                m = motifs[rng.integers(16)][: seq_len - t]
                out[s, t:t + len(m)] = m
                t += len(m)
                tok = out[s, t - 1]
                continue
            tok = successors[tok, rng.choice(4, p=probs[tok])]
            out[s, t] = tok
            t += 1
    return out


def build_model(d_model, n_layers, seq_len):
    import torch
    from torch import nn

    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, d_model)
            self.pos = nn.Parameter(0.02 * torch.randn(seq_len, d_model))
            layer = nn.TransformerEncoderLayer(d_model, nhead=4, dim_feedforward=4 * d_model,
                                               dropout=0.0, batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, VOCAB)
            mask = torch.triu(torch.full((seq_len, seq_len), float("-inf")), diagonal=1)
            self.register_buffer("mask", mask)

        def forward(self, tokens):
            T = tokens.shape[1]
            h = self.embed(tokens) + self.pos[:T]
            h = self.blocks(h, mask=self.mask[:T, :T], is_causal=True)
            return self.head(self.norm(h))

    return TinyLM()


def train_briefly(model, tokens, steps, seed):
    """Next-token prediction with Adam for ``steps`` batches of 32 sequences."""
    import torch

    if steps <= 0:
        return float("nan")
    g = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(tokens)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(0, len(data), (32,), generator=g)
        batch = data[idx]
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB),
                                                 batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def extract_builtin(args, writer):
    """Train the tiny model, then stream the hooked block's outputs into ``writer``."""
    import torch

    torch.manual_seed(args.seed)
    tokens = token_stream(args.sequences, args.seq_len, args.seed)
    model = build_model(args.d_model, args.layers, args.seq_len)
    t0 = time.perf_counter()
    loss = train_briefly(model, tokens, args.train_steps, args.seed)
    print(f"tiny transformer: d_model {args.d_model}, {args.layers} blocks; "
          f"{args.train_steps} training steps in {time.perf_counter() - t0:.1f} s, "
          f"final next-token loss {loss:.2f} (uniform guess: {np.log(VOCAB):.2f})")

    def hook(module, inputs, output):
        # output: (batch, tokens, d_model), the residual stream after this block
        writer.append(output.detach().reshape(-1, output.shape[-1]).float().numpy())

    handle = model.blocks.layers[args.layer].register_forward_hook(hook)
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(tokens), args.batch):
                model(torch.from_numpy(tokens[s:s + args.batch]))
    finally:
        handle.remove()


def extract_hf(args, writer):
    """Hidden states of a Hugging Face model on synthetic token ids."""
    import torch

    try:
        from transformers import AutoModel
    except ImportError as exc:
        raise SystemExit("--hf-model needs the transformers package "
                         "(pip install transformers)") from exc
    model = AutoModel.from_pretrained(args.hf_model, output_hidden_states=True).eval()
    vocab = model.config.vocab_size
    rng = np.random.default_rng(args.seed)
    with torch.no_grad():
        for s in range(0, args.sequences, args.batch):
            n = min(args.batch, args.sequences - s)
            ids = torch.from_numpy(rng.integers(0, vocab, size=(n, args.seq_len)))
            hidden = model(input_ids=ids).hidden_states[args.layer + 1]  # [0]: embeddings
            writer.append(hidden.reshape(-1, hidden.shape[-1]).float().numpy())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="acts.h5", help="activation file to write")
    parser.add_argument("--dataset", default="resid", help="dataset name in the file")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                        default="bfloat16", help="stored element type")
    parser.add_argument("--quick", action="store_true",
                        help="256 sequences and 30 training steps (a smoke test)")
    parser.add_argument("--sequences", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64, help="sequences per forward pass")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--layer", type=int, default=1, help="block whose output is stored")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--hf-model", default=None,
                        help="a Hugging Face model name (needs transformers and its weights)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads (the tiny model's matrices are too small to "
                        "share: more threads only spin, and slow down badly on a busy machine)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    args = parser.parse_args(argv)
    if args.quick:
        args.sequences, args.train_steps = 256, 30
    if not 0 <= args.layer < args.layers and args.hf_model is None:
        parser.error(f"--layer must be in [0, {args.layers - 1}]")

    import torch

    from sparsecode.io import ActivationWriter

    t0 = time.perf_counter()
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        parser.error(f"{out} exists; pass --overwrite to replace it")
    if args.hf_model is not None:
        from transformers import AutoConfig

        n_features = AutoConfig.from_pretrained(args.hf_model).hidden_size
        source = f"{args.hf_model}, hidden state {args.layer + 1}"
        extract = extract_hf
    else:
        n_features = args.d_model
        source = f"tiny transformer, output of block {args.layer}"
        extract = extract_builtin
    attrs = {"source": source, "torch": str(torch.__version__), "seq_len": args.seq_len}
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with ActivationWriter(out, n_features, dataset=args.dataset, dtype=args.dtype,
                              overwrite=args.overwrite, attrs=attrs) as writer:
            extract(args, writer)
            rows = writer.n_rows
    finally:
        torch.set_num_threads(threads)
    size = out.stat().st_size / 2**20
    print(f"wrote {rows:,} activations x {n_features} ({source}) to {out} as {args.dtype} "
          f"({size:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    print(f"next: sparsecode train {out} --dataset {args.dataset} --atoms 256 --k 8 "
          f"--out model.h5 --holdout 0.05")
    return {"path": str(out), "dataset": args.dataset, "rows": rows,
            "n_features": n_features}


if __name__ == "__main__":
    main()
