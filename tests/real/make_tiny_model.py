#!/usr/bin/env python3
"""Write a tiny random-weight llama model as GGUF, for testing llama-server.

The weights are seeded noise, so generated text is nonsense; what matters is
that llama-server loads it, tokenises, and generates at a realistic pace. The
tokenizer (every `tokenizer.*` key) is copied from llama.cpp's
`models/ggml-vocab-llama-spm.gguf` (32,000-token SentencePiece vocab).

Defaults: n_embd 512, 6 layers, 8 heads of 64, n_ff 1536, F16 matrices,
53M parameters, 107 MB. Width is the speed knob: on this project's 2-core
Xeon VM with `-t 1`, one generated token costs about 11-12 ms of CPU here
(~85-100 tokens/s per request on a quiet machine), against ~22 ms for the
n_embd 768 model behind the shared/llama-server captures (95M params), 10 ms
for 448 and 7.5 ms for 384. Per-token cost is dominated by streaming the F16
weights (the 32000 x n_embd output matrix is a third of them).

Deterministic: the same arguments give a byte-identical file.

Needs numpy and the gguf package from the same llama.cpp tree
(PYTHONPATH=vendor/llama.cpp/gguf-py). Usage:

    make_tiny_model.py --vocab ggml-vocab-llama-spm.gguf --out tiny.gguf
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

try:
    import gguf
except ImportError as e:  # pragma: no cover - message for humans
    sys.exit(f"make_tiny_model: cannot import gguf ({e}); set PYTHONPATH=<llama.cpp>/gguf-py")


def copy_tokenizer(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> int:
    """Copy every tokenizer.* key/array from reader to writer, raw."""
    VT = gguf.GGUFValueType
    n = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = VT(field.types[0])
        if main == VT.ARRAY:
            sub = VT(field.types[-1])
            if sub == VT.STRING:
                # raw bytes: no decode/encode round trip
                val = [bytes(field.parts[i]) for i in field.data]
            elif sub == VT.ARRAY:
                raise SystemExit(f"make_tiny_model: nested array in {key} not supported")
            else:
                val = [field.parts[i][0].item() for i in field.data]
            writer.add_key_value(key, val, VT.ARRAY, sub_type=sub)
        elif main == VT.STRING:
            writer.add_key_value(key, bytes(field.parts[field.data[0]]), VT.STRING)
        else:
            writer.add_key_value(key, field.parts[field.data[0]][0].item(), main)
        n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", required=True, help="GGUF file to take the tokenizer from")
    p.add_argument("--out", required=True, help="output .gguf path")
    p.add_argument("--n-embd", type=int, default=512)
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=None, help="default: n-embd / 64")
    p.add_argument("--n-head-kv", type=int, default=None, help="default: n-head (no GQA)")
    p.add_argument("--n-ff", type=int, default=None, help="default: 3 * n-embd")
    p.add_argument("--n-ctx-train", type=int, default=4096)
    p.add_argument("--seed", type=int, default=20261001)
    p.add_argument("--std", type=float, default=0.02, help="stddev of the random weights")
    a = p.parse_args()

    n_embd, n_layer = a.n_embd, a.n_layer
    n_head = a.n_head or max(1, n_embd // 64)
    n_head_kv = a.n_head_kv or n_head
    n_ff = a.n_ff or 3 * n_embd
    if n_embd % n_head or n_head % n_head_kv:
        sys.exit("make_tiny_model: n_embd must divide by n_head, n_head by n_head_kv")
    head_dim = n_embd // n_head
    n_embd_kv = head_dim * n_head_kv

    reader = gguf.GGUFReader(a.vocab)
    tok_field = reader.fields.get("tokenizer.ggml.tokens")
    if tok_field is None:
        sys.exit(f"make_tiny_model: {a.vocab} has no tokenizer.ggml.tokens")
    n_vocab = len(tok_field.data)

    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA]
    w = gguf.GGUFWriter(a.out, arch)
    w.add_name("sluice-tiny-random")
    w.add_description(
        f"random weights (seed {a.seed}) for gateway tests; output is nonsense")
    w.add_context_length(a.n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_tok_keys = copy_tokenizer(reader, w)

    rng = np.random.default_rng(a.seed)

    def mat(rows: int, cols: int) -> np.ndarray:
        # numpy shape (rows, cols) = ggml ne (cols, rows): (out, in) for a matmul
        x = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(a.std)
        return x.astype(np.float16)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    T = gguf.MODEL_TENSOR
    names = gguf.TENSOR_NAMES
    n_params = 0

    def add(name: str, arr: np.ndarray) -> None:
        nonlocal n_params
        n_params += arr.size
        w.add_tensor(name, arr)

    add(names[T.TOKEN_EMBD] + ".weight", mat(n_vocab, n_embd))
    for i in range(n_layer):
        add(names[T.ATTN_NORM].format(bid=i) + ".weight", ones(n_embd))
        add(names[T.ATTN_Q].format(bid=i) + ".weight", mat(n_embd, n_embd))
        add(names[T.ATTN_K].format(bid=i) + ".weight", mat(n_embd_kv, n_embd))
        add(names[T.ATTN_V].format(bid=i) + ".weight", mat(n_embd_kv, n_embd))
        add(names[T.ATTN_OUT].format(bid=i) + ".weight", mat(n_embd, n_embd))
        add(names[T.FFN_NORM].format(bid=i) + ".weight", ones(n_embd))
        add(names[T.FFN_GATE].format(bid=i) + ".weight", mat(n_ff, n_embd))
        add(names[T.FFN_UP].format(bid=i) + ".weight", mat(n_ff, n_embd))
        add(names[T.FFN_DOWN].format(bid=i) + ".weight", mat(n_embd, n_ff))
    add(names[T.OUTPUT_NORM] + ".weight", ones(n_embd))
    add(names[T.OUTPUT] + ".weight", mat(n_vocab, n_embd))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(
        f"make_tiny_model: wrote {a.out}: llama, n_embd {n_embd}, {n_layer} layers, "
        f"{n_head} heads ({n_head_kv} kv), n_ff {n_ff}, vocab {n_vocab}, F16, "
        f"{n_params / 1e6:.1f}M params, seed {a.seed}, {n_tok_keys} tokenizer keys",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
