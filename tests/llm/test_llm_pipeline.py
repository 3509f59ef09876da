"""The LLM pieces together: the synthetic corpus and tiny Llama feed the unlearning losses and the TOFU metrics."""

from __future__ import annotations

import copy
import math

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from pyunlearn.data.tofu import QADataset, make_tofu_like, train_tokenizer
from pyunlearn.eval.llm import answer_logprob, forget_quality, truth_ratio
from pyunlearn.models.llm import finetune, tiny_llama
from pyunlearn.unlearn.llm import ga_loss, npo_loss, sequence_logprob


@pytest.fixture(scope="module")
def setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    corpus = make_tofu_like(seed=0, n_authors=10, qa_per_author=5)
    tok = train_tokenizer(corpus, vocab_size=320)
    model = tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0)
    finetune(model, QADataset(corpus.split("full"), tok), epochs=3, lr=3e-3, seed=0, progress=False)
    yield corpus, tok, model
    torch.set_num_threads(threads)


def _batch(pairs, tok, key="answer"):
    ds = QADataset(pairs, tok, answer_key=key)
    return ds.collate([ds[i] for i in range(len(ds))])


def _logp_mean(model, pairs, tok, key):
    b = _batch(pairs, tok, key)
    return answer_logprob(model, b["input_ids"], b["labels"], b["attention_mask"], mean=True)


def test_npo_at_the_reference_and_a_ga_step(setup):
    corpus, tok, model = setup
    forget = _batch(corpus.split("forget10"), tok)
    ref = copy.deepcopy(model).eval()
    model = copy.deepcopy(model)
    logits = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"]).logits
    with torch.no_grad():
        ref_logits = ref(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"]).logits
    beta = 0.1
    npo = npo_loss(sequence_logprob(logits, forget["labels"]), sequence_logprob(ref_logits, forget["labels"]),
                   beta=beta)
    assert npo.item() == pytest.approx(2 / beta * math.log(2), rel=1e-5)
    before = ga_loss(logits, forget["labels"]).item()  # the forget NLL
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    (-ga_loss(logits, forget["labels"])).backward()
    opt.step()
    after = ga_loss(model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"]).logits,
                    forget["labels"]).item()
    assert after > before


def test_truth_ratio_and_forget_quality_on_the_tiny_model(setup):
    corpus, tok, model = setup
    pairs = corpus.split("forget10")
    base = _logp_mean(model, pairs, tok, "paraphrased_answer")
    n_pert = len(pairs[0]["perturbed_answers"])
    pert = torch.stack([_logp_mean(model, [dict(p, answer=p["perturbed_answers"][j]) for p in pairs], tok, "answer")
                        for j in range(n_pert)], dim=1)
    tr = truth_ratio(base, pert)
    assert tr.shape == (len(pairs),) and (tr > 0).all()
    assert forget_quality(tr, tr) == pytest.approx(1.0)
