"""The project's checkpoints as an lm-evaluation-harness model (Gao et al., EleutherAI).

lm-eval talks to a model through three methods on text (``lm_eval.api.model.LM``):
``loglikelihood`` (log p(continuation | context) and whether greedy decoding
yields it), ``loglikelihood_rolling`` (log p of a whole text, for perplexities) and
``generate_until`` (greedy text until a stop string). The synthetic corpus
(``training.data.corpus``) has no natural-language tokenizer; ``SyntheticTokenizer``
writes each token id as one word (``bos``, ``label3``, ``item12``, ``iw5``,
``key3``, ``value7``, ``copy9``; family and index as in ``training.data.corpus.Vocab``)
and reads words back, so tasks are plain text files a reader can inspect, and a
word outside the vocabulary is an error naming it.

``PneGPT`` is registered as ``pne-gpt``:
``lm_eval.simple_evaluate(model="pne-gpt", model_args="checkpoint=...,corpus=...")``
or ``simple_evaluate(model=PneGPT(model, tokenizer), ...)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from training.checkpoints import load_plain
from training.data.corpus import Vocab, vocab_from_config
from training.data.shards import load_corpus
from training.model import GPT, GPTConfig

# (family in training.data.corpus.Vocab, its word prefix); BOS is the word "bos".
WORD_PREFIX = (
    ("labels", "label"),
    ("icl", "item"),
    ("iw", "iw"),
    ("keys", "key"),
    ("values", "value"),
    ("copy", "copy"),
)


class SyntheticTokenizer:
    """One word per token id of the synthetic vocabulary, words separated by spaces.

    ``decode(encode(text)) == " ".join(text.split())``: the text's words, single-spaced.
    """

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        words = ["bos"]
        for family, prefix in WORD_PREFIX:
            words += [f"{prefix}{i}" for i in range(len(vocab.ids(family)))]
        if len(words) != vocab.size:
            raise ValueError(f"{len(words)} words for a vocabulary of {vocab.size} ids")
        self.words = words
        self.ids = {w: i for i, w in enumerate(words)}

    @classmethod
    def from_data_config(cls, data_cfg: dict) -> SyntheticTokenizer:
        return cls(vocab_from_config(data_cfg))

    @property
    def bos(self) -> int:
        return self.vocab.bos

    def encode(self, text: str) -> list[int]:
        out = []
        for position, word in enumerate(text.split()):
            if word not in self.ids:
                raise ValueError(
                    f"word {word!r} (word {position} of {text[:80]!r}) is not in the synthetic "
                    f"vocabulary of {len(self.words)} tokens (bos, label<i>, item<i>, iw<i>, "
                    "key<i>, value<i>, copy<i>)"
                )
            out.append(self.ids[word])
        return out

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.words[int(i)] for i in ids)


def load_checkpoint(checkpoint: str | Path, corpus: str | Path) -> tuple[GPT, SyntheticTokenizer]:
    """The trained model of ``checkpoint.pt`` (``training.train.save_checkpoint``) and the
    tokenizer of the corpus it was trained on (``training.data.corpus.build_corpus``)."""
    ckpt = load_plain(checkpoint, "checkpoint")
    data_cfg = load_corpus(corpus)["data_cfg"]
    model = GPT(GPTConfig(**ckpt["gpt_config"]))
    model.load_state_dict(ckpt["model"])
    tokenizer = SyntheticTokenizer.from_data_config(data_cfg)
    if tokenizer.vocab.size != model.cfg.vocab_size:
        raise ValueError(
            f"{corpus}: its vocabulary has {tokenizer.vocab.size} tokens, but the model of "
            f"{checkpoint} has vocab_size {model.cfg.vocab_size}"
        )
    return model.eval(), tokenizer


@register_model("pne-gpt")
class PneGPT(LM):
    """A trained ``training.model.GPT`` behind lm-eval's model interface.

    Parameters
    ----------
    model : GPT, optional
        The model (put in eval mode); or give ``checkpoint`` and ``corpus`` paths.
    tokenizer : SyntheticTokenizer, optional
    checkpoint, corpus : str, optional
        Paths for ``load_checkpoint`` (how ``model_args`` strings construct it).
    batch_size : int
        Sequences per forward pass.
    device : str, optional
        Torch device; default: where the model's parameters are.
    """

    def __init__(
        self,
        model: GPT | None = None,
        tokenizer: SyntheticTokenizer | None = None,
        checkpoint: str | None = None,
        corpus: str | None = None,
        batch_size: int | str | None = 64,
        device: str | None = None,
        **unused,
    ):
        super().__init__()
        if model is None:
            if checkpoint is None or corpus is None:
                raise ValueError("pne-gpt needs a model and tokenizer, or checkpoint= and corpus=")
            model, tokenizer = load_checkpoint(checkpoint, corpus)
        if tokenizer is None:
            raise ValueError("pne-gpt: a model was given without its tokenizer")
        self.model = model.eval() if device is None else model.to(device).eval()
        self.tok = tokenizer
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 64
        self.block_size = int(model.cfg.block_size)

    @property
    def _model_device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _logprobs(self, sequences: list[list[int]]) -> list[torch.Tensor]:
        """log p(x_{t+1} | x_<=t) for each sequence x, (len(x) - 1, vocab), float64 on CPU.

        Sequences are right-padded into batches; causal attention makes the padding
        invisible to the positions before it.
        """
        out: list[torch.Tensor] = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = sequences[start : start + self.batch_size]
            width = max(len(s) for s in chunk) - 1
            batch = torch.full((len(chunk), width), self.tok.bos, dtype=torch.long)
            for i, s in enumerate(chunk):
                batch[i, : len(s) - 1] = torch.tensor(s[:-1])
            logits = self.model(batch.to(self._model_device)).double().cpu()  # (B, T, vocab)
            logp = F.log_softmax(logits, dim=-1)
            out += [logp[i, : len(s) - 1] for i, s in enumerate(chunk)]
        return out

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """sum_j log p(c_j | context, c_<j) and whether every c_j is the argmax, for
        (context, continuation) token lists; the context is cut from the left to fit."""
        sequences, n_cont = [], []
        for context, continuation in pairs:
            if not continuation:
                raise ValueError("an empty continuation has no likelihood to score")
            if len(continuation) > self.block_size:
                raise ValueError(
                    f"a continuation of {len(continuation)} tokens exceeds block_size "
                    f"{self.block_size}"
                )
            full = (context or [self.tok.bos]) + continuation
            sequences.append(full[-(self.block_size + 1) :])
            n_cont.append(len(continuation))
        results = []
        for logp, seq, n in zip(self._logprobs(sequences), sequences, n_cont, strict=True):
            target = torch.tensor(seq[-n:])
            rows = logp[-n:]  # the predictions of the n continuation tokens
            total = float(rows.gather(1, target[:, None]).sum())
            results.append((total, bool((rows.argmax(dim=1) == target).all())))
        return results

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """(log p(continuation | context), greedy?) per request, ``args = (context,
        continuation)``; an empty context is conditioned on BOS."""
        pairs = [(self.tok.encode(r.args[0]), self.tok.encode(r.args[1])) for r in requests]
        return self._score(pairs)

    def loglikelihood_rolling(self, requests) -> list[float]:
        """log p(text) per request (``args = (text,)``), conditioned on BOS: the text in
        disjoint windows of at most ``block_size`` predictions, each with the longest
        context that fits (lm-eval's ``get_rolling_token_windows``). The windows of all
        requests are scored together, in batches."""
        windows, owner = [], []
        for i, r in enumerate(requests):
            tokens = self.tok.encode(r.args[0])
            for w in get_rolling_token_windows(
                token_list=tokens, prefix_token=self.tok.bos, max_seq_len=self.block_size,
                context_len=1,
            ):  # fmt: skip
                windows.append(make_disjoint_window(w))
                owner.append(i)
        out = [0.0] * len(requests)
        for i, (score, _) in zip(owner, self._score(windows), strict=True):
            out[i] += score
        return out

    @torch.no_grad()
    def generate_until(self, requests) -> list[str]:
        """Greedy continuation of each context (``args = (context, gen_kwargs)``) for at
        most ``gen_kwargs['max_gen_toks']`` tokens (default 16), cut before the first
        stop string of ``gen_kwargs['until']``; words joined by single spaces.

        Requests whose contexts have the same length and whose settings agree are
        decoded together, ``batch_size`` at a time: one forward pass per generated
        token for the batch; a sequence stops growing once a stop string appears.
        """
        out: list[str] = [""] * len(requests)
        groups: dict[tuple, list[int]] = {}
        parsed = []
        for i, r in enumerate(requests):
            context, kwargs = r.args
            until = kwargs.get("until") or []
            until = (until,) if isinstance(until, str) else tuple(until)
            tokens = self.tok.encode(context) or [self.tok.bos]
            max_new = int(kwargs.get("max_gen_toks", 16))
            parsed.append((tokens, until, max_new))
            groups.setdefault((len(tokens), until, max_new), []).append(i)
        for (_, until, max_new), members in groups.items():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                texts = self._greedy([parsed[i][0] for i in chunk], until, max_new)
                for i, text in zip(chunk, texts, strict=True):
                    out[i] = text
        return out

    def _greedy(self, contexts: list[list[int]], until: tuple, max_new: int) -> list[str]:
        """Greedy decoding of equal-length ``contexts`` as one batch (``generate_until``)."""
        seqs = torch.tensor(contexts, dtype=torch.long)
        generated: list[list[int]] = [[] for _ in contexts]
        done = [False] * len(contexts)
        for _ in range(max_new):
            window = seqs[:, -self.block_size :].to(self._model_device)
            nxt = self.model(window)[:, -1].argmax(dim=-1).cpu()
            seqs = torch.cat([seqs, nxt[:, None]], dim=1)
            for j, token in enumerate(nxt.tolist()):
                if not done[j]:
                    generated[j].append(token)
                    done[j] = any(stop in self.tok.decode(generated[j]) for stop in until)
            if all(done):
                break
        texts = []
        for tokens in generated:
            text = self.tok.decode(tokens)
            for stop in until:
                text = text.split(stop)[0]
            texts.append(text.strip())
        return texts
