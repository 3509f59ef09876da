"""LLM unlearning loop, SOUL (Sophia), WAGLE masks, TOFU/MUSE evaluation and the `pyunlearn llm` CLI (issue 7, spec
llm_mu.md §2.5, §2.6, §3, §6.4 T7/T9). One tiny Llama fine-tuned on a 20-author corpus is shared by the module."""

from __future__ import annotations

import argparse
import copy
import json
import math

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from pyunlearn.data.tofu import QADataset, make_tofu_like, train_tokenizer
from pyunlearn.eval.llm import answer_logprob, evaluate_tofu
from pyunlearn.models.llm import finetune, tiny_llama
from pyunlearn.optim import Sophia
from pyunlearn.unlearn.llm import (
    UnlearnConfig,
    UnlearnLoss,
    make_optimizer,
    token_mean_nll,
    unlearn_llm,
    wagle_masks,
    wagle_scores,
)
from pyunlearn.unlearn.llm.pipeline import add_cli, method_loss

# Utility margin of the SimNPO outcome test (and docs/llm_unlearning.md): |MU(unlearned) − MU(original)| ≤ 0.05.
MU_MARGIN = 0.05
SIMNPO = {"forget_loss": "simnpo", "retain_loss": "nll", "beta": 2.5, "forget_weight": 0.1375}  # §2.4 forget05


@pytest.fixture(scope="module")
def world():
    """20 authors x 10 QA (forget05 = the last author, 10 rows); original on full + background, reference
    ("retrain") on retain95 + background; 30 epochs at lr 3e-3 (~7 s each on one thread)."""
    corpus = make_tofu_like(seed=0, n_authors=20, qa_per_author=10)
    tok = train_tokenizer(corpus, vocab_size=400)
    bg = corpus.split("background")
    original = tiny_llama(tok, seed=0)
    finetune(original, QADataset(corpus.split("full") + bg, tok), epochs=30, lr=3e-3, seed=0, progress=False)
    reference = tiny_llama(tok, seed=0)
    finetune(reference, QADataset(corpus.split("retain95") + bg, tok), epochs=30, lr=3e-3, seed=0, progress=False)
    forget = QADataset(corpus.split("forget05"), tok)
    retain = QADataset(corpus.split("retain95"), tok)
    return {"corpus": corpus, "tok": tok, "original": original, "reference": reference, "forget": forget,
            "retain": retain}


@pytest.fixture(scope="module")
def evals(world):
    """evaluate_tofu of the reference (against itself) and the original, answer-template truth ratios."""
    c, tok = world["corpus"], world["tok"]
    ref = evaluate_tofu(world["reference"], tok, c, "forget05", truth_ratio_form="answer")
    ref = evaluate_tofu(world["reference"], tok, c, "forget05", reference=ref, truth_ratio_form="answer")
    orig = evaluate_tofu(world["original"], tok, c, "forget05", reference=ref, truth_ratio_form="answer")
    return ref, orig


def _forget_prob(model, ds) -> float:
    b = ds.collate([ds[i] for i in range(len(ds))])
    return answer_logprob(model, b["input_ids"], b["labels"], b["attention_mask"]).exp().mean().item()


def _cfg(**kw) -> UnlearnConfig:
    return UnlearnConfig(**{"lr": 1e-3, "epochs": 10, "progress": False, **kw})


# ------------------------------------------------------------------------------------------ evaluation
def test_reference_against_itself_and_the_original(evals):
    ref, orig = evals
    assert ref["forget_quality"] == pytest.approx(1.0)  # KS of identical samples (T8)
    assert ref["privleak"] == pytest.approx(0.0)
    # the original memorised the forget author, the reference never saw it
    assert orig["forget_probability"] > 0.9 and ref["forget_probability"] < 0.2
    assert orig["forget_rouge"] > 0.9 and orig["verbmem_f"] > ref["verbmem_f"] + 0.3
    assert orig["forget_quality"] < 0.01
    assert orig["privleak"] < -90  # Min-K% separates members from holdout perfectly: AUC 0 -> PrivLeak -100
    assert 0.6 < orig["model_utility"] <= 1 and 0.6 < ref["model_utility"] <= 1
    assert abs(orig["knowmem_r"] - ref["knowmem_r"]) < 0.05  # both know the retain authors


# ------------------------------------------------------------------------------------------ SimNPO / SOUL outcomes
def test_simnpo_forget05_lowers_forget_probability_raises_fq_keeps_utility(world, evals):
    ref, orig = evals
    model = copy.deepcopy(world["original"])
    rec = unlearn_llm(model, world["forget"], world["retain"], loss=UnlearnLoss(**SIMNPO), config=_cfg(epochs=20))
    assert rec["steps"] == 60 and rec["warmup_steps"] == 3  # 20 epochs x ceil(10/4) micro-batches; warm-up 1 epoch
    res = evaluate_tofu(model, world["tok"], world["corpus"], "forget05", reference=ref, truth_ratio_form="answer")
    assert res["forget_probability"] < 0.5 * orig["forget_probability"]
    assert res["forget_quality"] > 10 * orig["forget_quality"]
    assert abs(res["model_utility"] - orig["model_utility"]) <= MU_MARGIN
    assert res["forget_rouge"] < orig["forget_rouge"] - 0.2


def test_soul_sophia_lowers_forget_probability(world):
    model = copy.deepcopy(world["original"])
    before = _forget_prob(model, world["forget"])
    cfg = _cfg(optimizer="sophia")
    rec = unlearn_llm(model, world["forget"], world["retain"], loss=UnlearnLoss(**SIMNPO), config=cfg)
    assert rec["warmup_steps"] == 3  # SOUL: 10 % of the 30 steps (§2.5)
    opt = make_optimizer(list(model.parameters()), cfg)
    assert isinstance(opt, Sophia) and opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["rho"] == 0.04
    assert opt.defaults["weight_decay"] == 0.1 and opt.defaults["bs"] == 5120.0
    assert _forget_prob(model, world["forget"]) < 0.5 * before
    retain_after = _forget_prob(model, world["retain"])
    assert retain_after > 0.8  # the retain NLL keeps the retain answers


# ------------------------------------------------------------------------------------------ WAGLE
def test_wagle_masked_weights_stay_bit_identical(world):
    model = copy.deepcopy(world["original"])
    scores = wagle_scores(model, world["forget"], world["retain"], gamma=1e-6)
    masks = wagle_masks(scores, 0.3)
    n_all = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == math.floor(0.3 * n_all)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # NPO + KL needs the reference; weight decay is on: masked entries must not even decay
    loss = method_loss("npo", retain_loss="kl")
    unlearn_llm(model, world["forget"], world["retain"], loss=loss, masks=masks,
                config=_cfg(epochs=3, weight_decay=0.1))
    moved = 0
    for n, p in model.named_parameters():
        off = ~masks[n]
        assert torch.equal(p.detach()[off], before[n][off]), n
        moved += int((p.detach()[masks[n]] != before[n][masks[n]]).sum())
    assert moved > 0.5 * sum(int(m.sum()) for m in masks.values())
    assert _forget_prob(model, world["forget"]) < _forget_prob(world["original"], world["forget"])


def test_wagle_masks_exact_count_ties_and_order():
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.randint(0, 4, (7, 5), generator=g).float(),  # many ties
              "b": torch.rand(11, generator=g), "c": torch.zeros(3)}
    n = sum(s.numel() for s in scores.values())
    for ratio in (0.0, 0.1, 0.37, 0.5, 0.99, 1.0):
        m = wagle_masks(scores, ratio)
        assert sum(int(x.sum()) for x in m.values()) == math.floor(ratio * n)
        sel = torch.cat([s[m[k]] for k, s in scores.items()])
        uns = torch.cat([s[~m[k]] for k, s in scores.items()])
        if sel.numel() and uns.numel():
            assert sel.min() >= uns.max()  # T7: every selected score >= every unselected one
        per = wagle_masks(scores, ratio, scope="per_tensor")
        for k, s in scores.items():
            assert int(per[k].sum()) == math.floor(ratio * s.numel())
    only_b = wagle_masks(scores, 0.5, include=lambda name: name == "b")
    assert int(only_b["b"].sum()) == 5 and not only_b["a"].any() and not only_b["c"].any()
    with pytest.raises(ValueError, match="ratio"):
        wagle_masks(scores, 1.5)


def test_wagle_scores_match_a_brute_force_per_sample_computation():
    """T7: the score against upstream's recipe (HF `outputs.loss`, one sample at a time, grads summed) on a
    2-layer model, element by element for a subset of each tensor."""
    tr = pytest.importorskip("transformers")
    cfg = tr.LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = tr.LlamaForCausalLM(cfg).float()

    class DS(list):
        def collate(self, items):
            return {k: torch.stack([it[k] for it in items]) for k in items[0]}

    def item(seed):
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(3, 40, (8,), generator=gen)
        lab = ids.clone()
        lab[:3] = -100
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": lab}

    forget, retain = DS(item(i) for i in range(3)), DS(item(100 + i) for i in range(5))
    gamma = 1e-2
    got = wagle_scores(model, forget, retain, gamma=gamma, seed=7)
    partners = torch.randint(5, (3,), generator=torch.Generator().manual_seed(7)).tolist()

    def summed_grads(items):
        total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        for it in items:
            model.zero_grad(set_to_none=True)
            out = model(input_ids=it["input_ids"][None], labels=it["labels"][None])
            out.loss.backward()
            for n, p in model.named_parameters():
                total[n] += p.grad.clone()
        return total

    gf, gr = summed_grads(forget), summed_grads([retain[j] for j in partners])
    for n, p in model.named_parameters():
        flat_p, flat_f, flat_r = p.detach().reshape(-1), gf[n].reshape(-1), gr[n].reshape(-1)
        for i in range(0, flat_p.numel(), max(1, flat_p.numel() // 16)):
            want = abs((flat_p[i].item() - flat_r[i].item() / gamma) * flat_f[i].item())
            assert got[n].reshape(-1)[i].item() == pytest.approx(want, rel=1e-4, abs=1e-6), (n, i)


# ------------------------------------------------------------------------------------------ trainer mechanics
@pytest.mark.parametrize("hessian", ["sqgrad", "gnb"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(world, tmp_path, hessian):
    loss = method_loss("npo", retain_loss="kl")  # needs the reference: it must come back from reference.pt
    cfg = _cfg(optimizer="sophia", epochs=4, grad_accum=2, batch_size=3, checkpoint_every=2, sophia_hessian=hessian,
               hessian_every=2)
    full = copy.deepcopy(world["original"])
    rec_full = unlearn_llm(full, world["forget"], world["retain"], loss=loss, config=cfg, out_dir=tmp_path / "a")
    part = copy.deepcopy(world["original"])
    rec_a = unlearn_llm(part, world["forget"], world["retain"], loss=loss, config=cfg, out_dir=tmp_path / "b",
                        stop_after=3)
    assert rec_a["steps"] == 3
    resumed = copy.deepcopy(world["original"])  # a fresh process: the weights come from the checkpoint
    rec_b = unlearn_llm(resumed, world["forget"], world["retain"], loss=loss, config=cfg, out_dir=tmp_path / "b")
    assert rec_b["resumed_from"] == 3 and rec_b["steps"] == rec_full["steps"] == 8  # floor(4 * 4 / 2)
    for (n, p), q in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), n
    assert rec_b["log"] == rec_full["log"]
    lines = [json.loads(s) for s in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 9))
    # warm-up (10 % of 8 steps = 0 for Sophia) then linear decay to 0 from lr
    assert [r["lr"] for r in lines] == pytest.approx([1e-3 * (8 - s) / 8 for s in range(8)])


def test_soul_with_sophiag_gnb_hessian_every_k_steps(world, tmp_path):
    """hessian="gnb": h changes only at steps k, 2k, ... (sampled-label estimate, ĥ ≥ 0) and the run still unlearns."""
    model = copy.deepcopy(world["original"])
    before = _forget_prob(model, world["forget"])
    cfg = _cfg(optimizer="sophia", sophia_hessian="gnb", hessian_every=3, max_steps=2)
    unlearn_llm(model, world["forget"], world["retain"], loss=UnlearnLoss(**SIMNPO), config=cfg, out_dir=tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["optimizer"]["state"]
    assert all(not st["hessian"].any() for st in state.values())  # 2 steps < k = 3: never refreshed
    cfg = _cfg(optimizer="sophia", sophia_hessian="gnb", hessian_every=3, epochs=10)
    unlearn_llm(model, world["forget"], world["retain"], loss=UnlearnLoss(**SIMNPO), config=cfg,
                out_dir=tmp_path / "b")
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["optimizer"]["state"]
    assert all((st["hessian"] >= 0).all() for st in state.values())
    assert sum(int((st["hessian"] > 0).sum()) for st in state.values()) > 0
    assert _forget_prob(model, world["forget"]) < 0.5 * before


def test_pairing_visits_each_forget_item_once_per_epoch_reproducibly():
    """§1.2: anchor = forget; the order and the retain partners are a pure function of (seed, epoch)."""
    from pyunlearn.unlearn.llm.trainer import _epoch_plan

    order, partner = _epoch_plan(10, 7, seed=1, epoch=0)
    assert sorted(order.tolist()) == list(range(10)) and ((partner >= 0) & (partner < 7)).all()
    again = _epoch_plan(10, 7, seed=1, epoch=0)
    assert torch.equal(order, again[0]) and torch.equal(partner, again[1])
    other = _epoch_plan(10, 7, seed=1, epoch=1)
    assert not (torch.equal(order, other[0]) and torch.equal(partner, other[1]))
    state = torch.get_rng_state()
    _epoch_plan(10, 7, seed=2, epoch=3)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never touched


def test_grad_accum_sums_micro_batch_gradients(world):
    """One step with grad_accum=2 x batch 5 uses the mean of the two micro-batch gradients."""
    ds = world["forget"]
    cfg = _cfg(optimizer="sgd", max_steps=1, batch_size=5, grad_accum=2, weight_decay=0.0, max_grad_norm=None,
               warmup_steps=0, lr=0.1, seed=3)
    model = copy.deepcopy(world["original"])
    unlearn_llm(model, ds, None, loss=UnlearnLoss("ga", "none"), config=cfg)
    ref = copy.deepcopy(world["original"])
    ref.train()
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(3 * 1_000_003))
    for half in (order[:5], order[5:]):
        b = ds.collate([ds[int(i)] for i in half])
        (-token_mean_nll(ref(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])
         / 2).backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.1 * p.grad
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=n)


def test_bf16_autocast_on_cpu_when_asked_keeps_fp32_weights(world):
    model = copy.deepcopy(world["original"])
    before = _forget_prob(model, world["forget"])
    rec = unlearn_llm(model, world["forget"], world["retain"], loss=UnlearnLoss(**SIMNPO),
                      config=_cfg(bf16=True, epochs=5))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(math.isfinite(r["loss_total"]) for r in rec["log"])
    assert _forget_prob(model, world["forget"]) < before


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_no_answer_tokens_and_empty_forget_set(world):
    ds = world["forget"]

    class NoAnswers(list):
        collate = staticmethod(ds.collate)

    broken = NoAnswers(dict(ds[i], labels=torch.full_like(ds[i]["labels"], -100)) for i in range(3))
    model = world["original"]
    with pytest.raises(ValueError, match="no answer tokens"):
        unlearn_llm(model, broken, world["retain"], loss=UnlearnLoss(**SIMNPO), config=_cfg())
    with pytest.raises(ValueError, match="forget set is empty"):
        unlearn_llm(model, NoAnswers(), world["retain"], loss=UnlearnLoss(**SIMNPO), config=_cfg())
    with pytest.raises(ValueError, match="retain set is required"):
        unlearn_llm(model, ds, None, loss=UnlearnLoss(**SIMNPO), config=_cfg())
    with pytest.raises(ValueError, match="optimizer"):
        UnlearnConfig(optimizer="adam")


def test_bad_input_tokenizer_without_pad_token(world, tmp_path, capsys):
    tok = copy.deepcopy(world["tok"])
    tok.pad_token = None
    assert tok.pad_token_id is None
    with pytest.raises(ValueError, match="no pad token"):
        QADataset(world["corpus"].split("forget05"), tok)
    with pytest.raises(ValueError, match="no pad token"):
        evaluate_tofu(world["original"], tok, world["corpus"], "forget05")
    # the CLI with a model / tokenizer on disk: a clear message and exit code 2, before any training
    world["original"].save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "t")
    code = _cli(["llm", "--model", str(tmp_path / "m"), "--tokenizer", str(tmp_path / "t"),
                 "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2 and "--pad-token eos" in capsys.readouterr().err
    # the documented explicit choice: pad with EOS; the on-disk model then runs the whole pipeline
    code = _cli(["llm", "--model", str(tmp_path / "m"), "--tokenizer", str(tmp_path / "t"), "--pad-token", "eos",
                 "--n-authors", "10", "--qa-per-author", "2", "--finetune-epochs", "2", "--epochs", "2",
                 "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["demo"]["model_path"] == str(tmp_path / "m") and res["demo"]["pad_token"] == "eos"
    assert res["retrain"]["forget_quality"] == pytest.approx(1.0)


def _cli(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    add_cli(ap.add_subparsers())
    args = ap.parse_args(argv)
    return args.fn(args)


def test_cli_end_to_end_and_cache_reuse(tmp_path, capsys):
    """The CLI on a 10-author corpus (forget05 = 1 author, 3 QA each): table, results.json, cached models."""
    argv = ["llm", "--method", "simnpo", "--forget", "forget05", "--n-authors", "10", "--qa-per-author", "3",
            "--finetune-epochs", "30", "--epochs", "10", "--out", str(tmp_path), "--no-progress"]
    assert _cli(argv) == 0
    out = capsys.readouterr().out
    assert "original" in out and "retrain" in out and "unlearned" in out and "FQ" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["retrain"]["forget_quality"] == pytest.approx(1.0)
    assert res["unlearned"]["forget_probability"] < res["original"]["forget_probability"]
    assert (tmp_path / "original" / "meta.json").exists() and (tmp_path / "reference_retain95").is_dir()
    assert _cli(argv + ["--optimizer", "sophia", "--wagle", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.count("reusing") == 2 and "WAGLE mask" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["optimizer"] == "sophia" and res["wagle"]["selected"] == res["wagle"]["total"] // 2
