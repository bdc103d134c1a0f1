"""Corpora, tokenizers (tiktoken named + rustbpe custom), token shards, loader, bits-per-byte.

Nothing here reads a corpus or builds a tokenizer at import time.
"""

from .bpb import evaluate_bpb, val_batches
from .corpus import Corpus, DataError, check_corpus, load_corpus, split_documents
from .tokenizers import get_tokenizer
from .tokens import TokenData, TokenLoader, prepare_tokens

__all__ = [
    "DataError",
    "Corpus",
    "load_corpus",
    "check_corpus",
    "split_documents",
    "get_tokenizer",
    "TokenData",
    "prepare_tokens",
    "TokenLoader",
    "evaluate_bpb",
    "val_batches",
]
