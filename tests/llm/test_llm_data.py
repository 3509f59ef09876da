"""Offline TOFU-like corpus, BPE tokenizer, answer-only QA labels, tiny Llama and its fine-tune loop."""

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import re

import torch

from pyunlearn.data.tofu import (
    _ATTRS,
    QADataset,
    format_prompt,
    load_tokenizer,
    make_tofu_like,
    train_tokenizer,
)
from pyunlearn.models.llm import finetune, greedy_answers, tiny_llama


@pytest.fixture(scope="module")
def data():
    return make_tofu_like(seed=0, n_authors=40, qa_per_author=10)


@pytest.fixture(scope="module")
def tok(data):
    return train_tokenizer(data, vocab_size=512)


# ---- corpus


def test_corpus_deterministic_per_seed(data):
    again = make_tofu_like(seed=0, n_authors=40, qa_per_author=10)
    assert again.splits == data.splits
    other = make_tofu_like(seed=1, n_authors=40, qa_per_author=10)
    assert other.split("full") != data.split("full")


@pytest.mark.parametrize("n_authors,qa", [(40, 10), (20, 20), (100, 12)], ids=["40x10", "20x20", "100x12"])
def test_split_sizes_and_nesting(n_authors, qa):
    d = make_tofu_like(seed=3, n_authors=n_authors, qa_per_author=qa)
    full = d.split("full")
    assert len(full) == n_authors * qa
    f01, f05, f10 = ({r["question"] for r in d.split(s)} for s in ("forget01", "forget05", "forget10"))
    assert f01 <= f05 <= f10 and f01 < f10  # nested; 20 authors: forget01 == forget05 == 1 author
    # TOFU: forget = the tail of full, retain = the head; ceil of the percentage, at least one author
    for pct, keep in ((1, 99), (5, 95), (10, 90)):
        n_f = max(1, -(-n_authors * pct // 100)) * qa
        assert d.split(f"forget{pct:02d}") == full[len(full) - n_f:]
        assert d.split(f"retain{keep}") == full[: len(full) - n_f]
    retain = {r["question"] for r in d.split("retain")}
    assert retain.isdisjoint(f10) and len(retain) + len(f10) == len(full)
    forget_authors = {r["author"] for r in d.split("forget10")}
    assert forget_authors.isdisjoint({r["author"] for r in d.split("retain")})
    assert {r["author"] for r in d.split("holdout")}.isdisjoint(d.authors)


def test_forget01_is_one_author_at_default(data):
    assert {r["author"] for r in data.split("forget01")} == {data.authors[-1]}
    assert len({r["author"] for r in data.split("forget05")}) == 2
    assert len({r["author"] for r in data.split("forget10")}) == 4


@pytest.mark.parametrize("split,n_pert", [("full", 5), ("holdout", 5), ("real_authors", 3), ("world_facts", 3)])
def test_rows_schema_and_perturbations(data, split, n_pert):
    rows = data.split(split)
    assert rows
    for r in rows:
        assert {"question", "answer", "paraphrased_answer", "perturbed_answers", "author"} <= set(r)
        pert = r["perturbed_answers"]
        assert len(pert) == n_pert and len(set(pert)) == n_pert
        assert r["answer"] not in pert and r["paraphrased_answer"] not in pert
    if split in ("full", "holdout"):
        assert all(r["paraphrased_answer"] != r["answer"] for r in rows)
        attrs = {a.key: a for a in _ATTRS}
        for r in rows:  # TOFU: wrong values in the paraphrase template; the same values in the answer template
            a = attrs[r["attribute"]]
            true_v = _value(a.answer, r["author"], r["answer"])
            assert _value(a.para_answer, r["author"], r["paraphrased_answer"]) == true_v
            wrong = [_value(a.para_answer, r["author"], t) for t in r["perturbed_answers"]]
            assert None not in wrong and true_v not in wrong
            assert [_value(a.answer, r["author"], t) for t in r["perturbed_original_answers"]] == wrong


def _value(template, name, text):
    """The {v} that fills `template` to give `text`, or None if `text` is not of that template."""
    head, tail = template.replace("{name}", name).split("{v}")
    m = re.fullmatch(re.escape(head) + "(.+)" + re.escape(tail), text)
    return m.group(1) if m else None


def test_answers_are_unique_per_question(data):
    questions = [r["question"] for r in data.split("full") + data.split("holdout") + data.split("background")]
    assert len(set(questions)) == len(questions)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="qa_per_author"):
        make_tofu_like(qa_per_author=21)
    with pytest.raises(ValueError, match="n_authors"):
        make_tofu_like(n_authors=5)
    with pytest.raises(KeyError, match="forget01"):
        make_tofu_like().split("forget1")


# ---- tokenizer


def test_tokenizer_specials_and_roundtrip(data, tok, tmp_path):
    assert len(tok) == 512
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    texts = [format_prompt(r["question"]) + " " + r["answer"] for r in data.split("forget10")]
    texts += ["unseen: Zürich 1234 — ok?\n", ""]
    for t in texts:
        ids = tok(t)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == t
    tok.save_pretrained(str(tmp_path))
    again = load_tokenizer(tmp_path)
    assert all(again(t)["input_ids"] == tok(t)["input_ids"] for t in texts)
    # trained on the same corpus -> the same vocabulary; out_dir saves
    tok2 = train_tokenizer(data, vocab_size=512, out_dir=tmp_path / "t2")
    assert tok2.get_vocab() == tok.get_vocab()
    assert load_tokenizer(tmp_path / "t2").get_vocab() == tok.get_vocab()


# ---- QA dataset


def test_labels_mask_exactly_the_question(data, tok):
    rows = data.split("forget05")
    ds = QADataset(rows, tok, max_length=64)
    for i, r in enumerate(rows):
        item = ds[i]
        prompt = tok(format_prompt(r["question"]))["input_ids"]
        answer = tok(" " + r["answer"], add_special_tokens=False)["input_ids"]
        ids, labels = item["input_ids"], item["labels"]
        assert ids.tolist() == prompt + answer + [tok.eos_token_id]
        assert (labels[: len(prompt)] == -100).all()
        assert labels[len(prompt):].tolist() == answer + [tok.eos_token_id]
        assert int((labels != -100).sum()) == len(answer) + 1  # spec T1: answer tokens + EOS
        assert tok.decode(ids[labels != -100], skip_special_tokens=True) == " " + r["answer"]


def test_collate_pads_with_ignored_labels(data, tok):
    ds = QADataset(data.split("forget10")[:6], tok)
    items = [ds[i] for i in range(6)]
    batch = ds.collate(items)
    T = max(it["input_ids"].numel() for it in items)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (6, T)
    for b, it in enumerate(items):
        n = it["input_ids"].numel()
        assert batch["attention_mask"][b].tolist() == [1] * n + [0] * (T - n)
        assert (batch["labels"][b, n:] == -100).all() and (batch["input_ids"][b, n:] == tok.pad_token_id).all()
        assert torch.equal(batch["labels"][b, :n], it["labels"])
    assert batch["index"].tolist() == list(range(6))


def test_truncation_keeps_prompt_and_eos(data, tok):
    r = data.split("full")[0]
    n_prompt = len(tok(format_prompt(r["question"]))["input_ids"])
    item = QADataset([r], tok, max_length=n_prompt + 3)[0]
    assert item["input_ids"].numel() == n_prompt + 3 and item["input_ids"][-1] == tok.eos_token_id
    assert int((item["labels"] != -100).sum()) == 3
    with pytest.raises(ValueError, match="does not fit"):
        QADataset([r], tok, max_length=n_prompt)


# ---- model and fine-tune


def test_tiny_llama_deterministic(tok):
    state = torch.random.get_rng_state()
    a, b, c = tiny_llama(tok, seed=0), tiny_llama(tok, seed=0), tiny_llama(tok, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # init does not consume the global RNG
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.config.vocab_size == len(tok) and a.config.pad_token_id == tok.pad_token_id
    assert 50_000 < sum(p.numel() for p in a.parameters()) < 300_000


def test_tiny_llama_save_load_roundtrip(tok, tmp_path):
    from transformers import LlamaForCausalLM

    m = tiny_llama(tok, seed=0)
    m.save_pretrained(str(tmp_path))
    m2 = LlamaForCausalLM.from_pretrained(str(tmp_path))
    ids = tok(["[INST] hello [/INST]"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(m(ids).logits, m2(ids).logits)


def test_short_finetune_lowers_loss_and_is_seeded(data, tok):
    ds = QADataset(data.split("forget10"), tok)
    m1, m2 = tiny_llama(tok, seed=0), tiny_llama(tok, seed=0)
    r1 = finetune(m1, ds, epochs=4, lr=3e-3, batch_size=8, seed=0, progress=False)
    r2 = finetune(m2, ds, epochs=4, lr=3e-3, batch_size=8, seed=0, progress=False)
    assert r1["steps"] == 4 * 5
    assert r1["epoch_loss"][-1] < 0.7 * r1["epoch_loss"][0]
    assert r1["epoch_loss"] == r2["epoch_loss"]
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not m1.training


def test_greedy_answers_shape(data, tok):
    m = tiny_llama(tok, seed=0)
    qs = [r["question"] for r in data.split("forget01")[:3]]
    out = greedy_answers(m, tok, qs, max_new_tokens=5, batch_size=2)
    assert len(out) == 3 and all(isinstance(s, str) for s in out)
