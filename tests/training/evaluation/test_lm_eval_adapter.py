"""The lm-eval adapter and tasks: likelihoods equal a hand computation token by token, greedy
generation equals an argmax loop, and the project's tasks run through
``lm_eval.simple_evaluate`` offline (every socket connection refused) with scores equal to
what the trained checkpoint gives by hand."""

from __future__ import annotations

import json
import math
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from preregistration.tables import validate
from tests.tiny_data import TINY_DATA
from training.data.corpus import build_corpus
from training.evaluation.lm_eval_adapter import PneGPT, SyntheticTokenizer
from training.evaluation.lm_eval_suite import TASKS, lm_eval_scores, task_config, write_task_data
from training.model import GPT, GPTConfig, lm_loss

DATA = TINY_DATA | {"n_train_sequences": 128, "n_val_sequences": 8}
BLOCK = 16
LM_CFG = {"tasks": list(TASKS), "n_docs": 24, "icl_shots": 3, "segment_len": 5, "cloze_tokens": 2}


def _request(*args):
    return SimpleNamespace(args=args)


@pytest.fixture(scope="module")
def tiny():
    """A tiny corpus and a tiny GPT trained for 40 Adam steps on it (about a second)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    corpus = build_corpus(DATA, block_size=BLOCK)
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=corpus["vocab_size"], block_size=BLOCK, n_layer=1, n_head=2, n_embd=16)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = corpus["train"].long()
    for step in range(40):
        batch = train[(step * 32) % len(train) :][:32]
        loss = lm_loss(model(batch[:, :-1]), batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    yield model.eval(), corpus, SyntheticTokenizer.from_data_config(corpus["data_cfg"])
    torch.set_num_threads(before)


@torch.no_grad()
def _by_hand(model: GPT, context: list[int], continuation: list[int]) -> float:
    """sum_j log softmax(model(context + c_<j))[-1][c_j], one forward pass per token."""
    total = 0.0
    for j, token in enumerate(continuation):
        prefix = torch.tensor([context + continuation[:j]])
        total += float(F.log_softmax(model(prefix)[0, -1].double(), dim=-1)[token])
    return total


def test_tokenizer_round_trip_and_unknown_words(tiny):
    _, _, tok = tiny
    ids = list(range(tok.vocab.size))
    assert tok.encode(tok.decode(ids)) == ids
    assert tok.decode(tok.encode("  bos   label1 copy0 ")) == "bos label1 copy0"
    assert tok.encode("bos label1") == [tok.bos, int(tok.vocab.ids("labels")[1])]
    with pytest.raises(ValueError, match="'hello'.*not in the synthetic vocabulary"):
        tok.encode("bos hello")


def test_loglikelihood_equals_a_token_by_token_hand_computation(tiny):
    model, _, tok = tiny
    lm = PneGPT(model, tok, batch_size=2)  # batches of 2: padding is exercised
    pairs = [
        ("bos item3 label1 item3", " label1"),
        ("bos copy1 copy2 copy3 copy1", " copy2 copy3"),
        ("bos", " key1 key2 value3"),
        ("", " bos iw2"),  # an empty context is conditioned on BOS
        ("bos item1 label2 item4 label0 item1", " label2 item4 label0"),
    ]
    got = lm.loglikelihood([_request(c, x) for c, x in pairs])
    for (context, continuation), (logp, _) in zip(pairs, got, strict=True):
        ctx = tok.encode(context) or [tok.bos]
        want = _by_hand(model, ctx, tok.encode(continuation))
        assert logp == pytest.approx(want, abs=1e-5)
        assert logp < 0
    # is_greedy: true exactly when each continuation token is the argmax
    ctx = tok.encode("bos copy1 copy2")
    with torch.no_grad():
        best = int(model(torch.tensor([ctx]))[0, -1].argmax())
        other = (best + 1) % tok.vocab.size
    flags = lm.loglikelihood(
        [_request("bos copy1 copy2", " " + tok.words[t]) for t in (best, other)]
    )
    assert [f for _, f in flags] == [True, False]


def test_rolling_loglikelihood_is_the_text_given_bos(tiny):
    model, _, tok = tiny
    lm = PneGPT(model, tok)
    short = "item1 label2 item1 label2 copy3"
    (rolling,) = lm.loglikelihood_rolling([_request(short)])
    assert rolling == pytest.approx(_by_hand(model, [tok.bos], tok.encode(short)), abs=1e-5)
    # longer than the block: every token is scored once, within the block's context
    long = " ".join(["copy1 copy2 copy3"] * 9)  # 27 tokens > BLOCK
    (total,) = lm.loglikelihood_rolling([_request(long)])
    ids = [tok.bos, *tok.encode(long)]
    with torch.no_grad():
        first = F.log_softmax(model(torch.tensor([ids[:BLOCK]]))[0].double(), dim=-1)
        last = F.log_softmax(model(torch.tensor([ids[-BLOCK - 1 : -1]]))[0].double(), dim=-1)
    n_rest = len(ids) - 1 - BLOCK
    want = sum(float(first[t, ids[t + 1]]) for t in range(BLOCK))
    want += sum(float(last[BLOCK - n_rest + j, ids[BLOCK + 1 + j]]) for j in range(n_rest))
    assert total == pytest.approx(want, abs=1e-5)


def test_generate_until_is_greedy_and_stops(tiny):
    model, _, tok = tiny
    lm = PneGPT(model, tok)
    context = "bos copy1 copy4 copy2 copy1 copy4"
    ids = tok.encode(context)
    with torch.no_grad():
        for _ in range(3):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    want = tok.decode(ids[-3:])
    (got,) = lm.generate_until([_request(context, {"until": ["nothing"], "max_gen_toks": 3})])
    assert got == want
    first = want.split()[0]
    (cut,) = lm.generate_until([_request(context, {"until": [first], "max_gen_toks": 3})])
    assert cut == ""  # stops before the first stop string


def test_requests_in_batches_equal_requests_one_at_a_time(tiny):
    """Greedy decoding of many contexts (grouped by length, batch_size at a time, each
    stopping at its own stop string) and rolling likelihoods of many texts scored
    together give what each request gives alone."""
    model, corpus, tok = tiny
    lm = PneGPT(model, tok, batch_size=4)
    rows = corpus["val"].long().tolist() + corpus["train"][:6].long().tolist()
    contexts = [tok.decode(r[1 : 4 + i % 5]) for i, r in enumerate(rows)]  # lengths 3..7
    stops = ["nothing", tok.decode(rows[0][5:6])]
    gen = [
        _request(c, {"until": [stops[i % 2]], "max_gen_toks": 4}) for i, c in enumerate(contexts)
    ]
    assert lm.generate_until(gen) == [lm.generate_until([g])[0] for g in gen]
    texts = [_request(tok.decode(r[1:][: 5 + 3 * (i % 8)])) for i, r in enumerate(rows)]
    together = lm.loglikelihood_rolling(texts)
    alone = [lm.loglikelihood_rolling([t])[0] for t in texts]
    assert together == pytest.approx(alone, abs=1e-6)


def test_tasks_run_offline_through_simple_evaluate(tiny, tmp_path, monkeypatch):
    model, corpus, tok = tiny
    paths = write_task_data(corpus, LM_CFG, tmp_path / "data")
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "gpt_config": vars(model.cfg)}, checkpoint)
    torch.save(corpus, tmp_path / "corpus.pt")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    table = lm_eval_scores(model, tok, tmp_path / "data", list(TASKS), "bs8_fixed_s0")
    validate(table, "lm_eval")
    score = table.set_index("task")["value"]
    assert (table["n_docs"] == LM_CFG["n_docs"]).all()

    # by hand: the label with the largest logit at the query; greedy completion; token loss
    docs = {t: [json.loads(line) for line in p.read_text().splitlines()] for t, p in paths.items()}
    labels = tok.vocab.ids("labels")
    with torch.no_grad():
        icl = torch.tensor([tok.encode(d["context"]) for d in docs["pne_icl_fewshot"]])
        pick = model(icl)[:, -1, torch.as_tensor(labels)].argmax(dim=1).numpy()
    want_acc = np.mean(pick == [d["label"] for d in docs["pne_icl_fewshot"]])
    assert score["pne_icl_fewshot"] == pytest.approx(want_acc)
    greedy = PneGPT(model, tok).generate_until(
        [
            _request(d["context"], {"until": ["bos"], "max_gen_toks": 2})
            for d in docs["pne_copy_cloze"]
        ]
    )
    want_em = np.mean(
        [g == d["target"] for g, d in zip(greedy, docs["pne_copy_cloze"], strict=True)]
    )
    assert score["pne_copy_cloze"] == pytest.approx(want_em)
    texts = [d["text"] for d in docs["pne_heldout_rolling"]]
    logp = sum(_by_hand(model, [tok.bos], tok.encode(t)) for t in texts)
    n_tokens = sum(len(t.split()) for t in texts)
    assert score["pne_heldout_rolling"] == pytest.approx(math.exp(-logp / n_tokens), rel=1e-6)

    # the registered model class, constructed by lm-eval from a model_args string
    import lm_eval
    from lm_eval.tasks import TaskManager

    from training.evaluation.lm_eval_suite import TASK_DIR

    out = lm_eval.simple_evaluate(
        model="pne-gpt",
        model_args=f"checkpoint={checkpoint},corpus={tmp_path / 'corpus.pt'}",
        tasks=[task_config("pne_icl_fewshot", paths["pne_icl_fewshot"])],
        task_manager=TaskManager(include_path=str(TASK_DIR), include_defaults=False),
        bootstrap_iters=0,
        log_samples=False,
    )
    assert out["results"]["pne_icl_fewshot"]["acc,none"] == pytest.approx(want_acc)


def test_a_task_without_its_data_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="pne_copy_cloze.jsonl.*not found"):
        task_config("pne_copy_cloze", tmp_path / "pne_copy_cloze.jsonl")
    with pytest.raises(KeyError, match="unknown lm-eval task"):
        task_config("mmlu", tmp_path / "x.jsonl")
