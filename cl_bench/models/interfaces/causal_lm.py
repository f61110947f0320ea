"""The ``CausalLM`` interface: log-likelihood of continuations, token scores, greedy generation.

Every causal language model (a Hugging Face model, a tiny GPT-2 trained here, a contrastive
scorer over two of them) exposes the same small surface, the one lm-evaluation-harness
evaluates through:

- ``loglikelihood(requests)``: for each ``(context, continuation)`` the summed score of the
  continuation's tokens and whether greedy decoding would have produced it;
- ``generate_until(contexts, until, max_new_tokens)``: greedy generation;
- ``next_token_scores(sequences)``: the scores over the vocabulary of the next token.

Subclasses implement two primitives: ``token_scores(pairs, shared_prefix)`` (the score of every
vocabulary item at every continuation position: plain log-probabilities for a language model,
contrastive scores for a scorer) and ``next_token_scores``. Tokenization follows
lm-evaluation-harness exactly (``encode_pair``), so scores are comparable with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cl_bench.errors import ClBenchError

Request = tuple[str, str]
TokenPair = tuple[list[int], list[int]]


class CausalLM(nn.Module):
    """Base class of every causal LM adapter; see the module docstring."""

    tokenizer: Any  # a transformers tokenizer (``encode``/``decode``)
    eot_token_id: int
    max_length: int
    batch_size: int = 32  # requests per forward pass
    chunk_size: int = 512  # requests whose token scores are held in memory at once

    # --- tokenization --------------------------------------------------------------------------
    def tok_encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def tok_decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def encode_pair(self, context: str, continuation: str, contexts: dict[str, list[int]] | None = None) -> TokenPair:
        """lm-evaluation-harness's split: trailing spaces of the context move to the continuation;
        the continuation's tokens are those of ``encode(context + continuation)`` after the
        context's tokens; an empty context is replaced by the end-of-text token. ``contexts``
        memoises the context's own encoding (every choice of a question shares its context)."""
        if not continuation:
            raise ClBenchError("a log-likelihood request has an empty continuation (an empty answer choice?)")
        if not context:
            return [self.eot_token_id], self.tok_encode(continuation)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.tok_encode(context + continuation)
        if contexts is None:
            ctx = self.tok_encode(context)
        elif (ctx := contexts.get(context)) is None:
            ctx = contexts[context] = self.tok_encode(context)
        return whole[: len(ctx)], whole[len(ctx) :]

    def truncate_pair(self, pair: TokenPair) -> TokenPair:
        """Keep the last ``max_length + 1`` tokens of context + continuation (the model sees all but
        the last), as lm-evaluation-harness does; the continuation itself must fit."""
        ctx, cont = pair
        if len(cont) > self.max_length:
            raise ClBenchError(
                f"a continuation of {len(cont)} tokens does not fit the model's context of {self.max_length}"
            )
        whole = (ctx + cont)[-(self.max_length + 1) :]
        return whole[: len(whole) - len(cont)], cont

    # --- primitives a subclass implements ------------------------------------------------------
    def token_scores(self, pairs: list[TokenPair], shared_prefix: list[int]) -> list[torch.Tensor]:
        """For each (context, continuation) pair, scores [len(continuation), vocab] (float32, CPU):
        row t scores every candidate for continuation token t given everything before it.
        ``shared_prefix`` is a prefix common to every context (may be empty): an implementation
        may encode it once."""
        raise NotImplementedError

    def next_token_scores(self, sequences: list[list[int]]) -> torch.Tensor:
        """Scores [B, vocab] of the token following each sequence."""
        raise NotImplementedError

    # --- what protocols call -------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[Request]) -> list[tuple[float, bool]]:
        """Summed score of each continuation and whether it is the greedy (argmax) continuation."""
        contexts: dict[str, list[int]] = {}  # each distinct context is encoded once
        pairs = [self.truncate_pair(self.encode_pair(c, x, contexts)) for c, x in requests]
        return self.loglikelihood_tokens(pairs)

    def loglikelihood_tokens(self, pairs: list[TokenPair]) -> list[tuple[float, bool]]:
        if not pairs:
            return []
        prefix = common_prefix([ctx for ctx, _ in pairs])
        prefix = prefix[: max(0, min(len(ctx) for ctx, _ in pairs) - 1)]  # every context keeps >= 1 token
        # Longest first (as lm-eval orders them) so padding within a batch is small; contexts that
        # share a question stay adjacent.
        order = sorted(range(len(pairs)), key=lambda i: (-len(pairs[i][0]) - len(pairs[i][1]), pairs[i][0]))
        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        for start in range(0, len(order), self.chunk_size):
            idx = order[start : start + self.chunk_size]
            scores = self.token_scores([pairs[i] for i in idx], prefix)
            for i, s in zip(idx, scores):
                cont = torch.tensor(pairs[i][1], dtype=torch.long)
                picked = s.gather(1, cont[:, None])[:, 0]
                greedy = bool((s.argmax(dim=1) == cont).all())
                out[i] = (float(picked.double().sum()), greedy)
        return [o for o in out if o is not None]

    @torch.no_grad()
    def generate_until(
        self, contexts: Sequence[str], until: Sequence[str] = ("\n\n",), max_new_tokens: int = 64
    ) -> list[str]:
        """Greedy generation from each context until a stop string or ``max_new_tokens``."""
        results: list[str] = []
        for context in contexts:
            ids = self.tok_encode(context) or [self.eot_token_id]
            new: list[int] = []
            text = ""
            for _ in range(max_new_tokens):
                window = (ids + new)[-self.max_length :]
                nxt = int(self.next_token_scores([window])[0].argmax())
                if nxt == self.eot_token_id:
                    break
                new.append(nxt)
                text = self.tok_decode(new)
                if any(stop in text for stop in until):
                    break
            for stop in until:
                text = text.split(stop)[0]
            results.append(text)
        return results


def common_prefix(seqs: Sequence[Sequence[int]]) -> list[int]:
    """The longest list every sequence starts with."""
    if not seqs:
        return []
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return list(first[:n])
