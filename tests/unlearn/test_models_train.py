"""pyunlearn.models and pyunlearn.train: deterministic init, shapes, the digits recipe's accuracy, checkpoint
resume bit-identical to an uninterrupted run."""

import time

import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from pyunlearn.data import load_digits
from pyunlearn.models import (
    CIFAR10_NORMALIZE,
    MLP,
    Normalize,
    SmallCNN,
    build_model,
    init_weights,
    resnet18,
    resnet20,
)
from pyunlearn.train import TrainConfig, accuracy, predict_proba, train_model, train_original


@pytest.fixture(scope="module")
def digits():
    return load_digits(split_seed=0)


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


SHAPES = {"cnn": (1, 8, 8), "mlp": (1, 8, 8), "resnet20": (3, 16, 16), "resnet18": (3, 16, 16)}


# --- models -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SHAPES))
def test_init_weights_deterministic(name):
    rng = torch.get_rng_state()
    a = build_model(name, 10, SHAPES[name], seed=3)
    b = build_model(name, 10, SHAPES[name], seed=3)
    c = build_model(name, 10, SHAPES[name], seed=4)
    init_weights(c, 4)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is not consumed
    assert _same_state(a, b) and not _same_state(a, c)
    with torch.no_grad():  # disturb weights and BN statistics, then re-init
        for p in c.parameters():
            p.add_(1.0)
        c.train()(torch.rand(4, *SHAPES[name]))
    assert _same_state(init_weights(c, 3), a)


def test_init_weights_fallback_and_errors():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

        def reset_parameters(self):
            nn.init.normal_(self.w)

    m1, m2 = nn.Sequential(nn.Linear(3, 3), Scale()), nn.Sequential(nn.Linear(3, 3), Scale())
    assert _same_state(init_weights(m1, 0), init_weights(m2, 0))
    assert m1[1].w.abs().sum() > 0

    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

    with pytest.raises(TypeError, match="no reset_parameters"):
        init_weights(nn.Sequential(Bare()), 0)
    with pytest.raises(TypeError, match="seed must be an int"):
        init_weights(m1, 1.5)


@pytest.mark.parametrize(
    "model, shape, n_params",
    [
        (SmallCNN(), (1, 8, 8), 24_058),
        (SmallCNN(in_channels=3, num_classes=7), (3, 32, 32), None),
        (MLP(), (1, 8, 8), 17_226),
        (resnet20(), (3, 16, 16), 269_722),  # the classic 0.27M
        (resnet18(), (3, 16, 16), 11_173_962),  # 11.2M, CIFAR stem
        (resnet18(num_classes=5, in_channels=1, normalize=((0.5,), (0.25,))), (1, 12, 12), None),
    ],
    ids=["cnn-digits", "cnn-cifar", "mlp", "resnet20", "resnet18", "resnet18-1ch"],
)
def test_model_shapes(model, shape, n_params):
    out = model(torch.rand(2, *shape))
    assert out.shape == (2, model.fc.out_features)
    if n_params is not None:
        assert sum(p.numel() for p in model.parameters()) == n_params


def test_resnet_stem_and_normalisation():
    m = resnet18(normalize=CIFAR10_NORMALIZE)
    assert isinstance(m.normalize, Normalize) and next(iter(m.children())) is m.normalize
    assert (m.conv1.kernel_size, m.conv1.stride, isinstance(m.maxpool, nn.Identity)) == ((3, 3), (1, 1), True)
    x = torch.rand(2, 3, 4, 4)
    mean, std = (torch.tensor(v)[None, :, None, None] for v in CIFAR10_NORMALIZE)
    torch.testing.assert_close(m.normalize(x), (x - mean) / std)
    assert isinstance(resnet20().normalize, nn.Identity)
    assert resnet18(stem="imagenet")(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="statistics for 3 channels"):
        resnet20(in_channels=1, normalize=CIFAR10_NORMALIZE)
    with pytest.raises(ValueError, match="std must be > 0"):
        Normalize(0.5, 0.0)


def test_build_model_errors():
    with pytest.raises(ValueError, match="name must be one of"):
        build_model("vgg", 10, (3, 32, 32))
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        build_model("cnn", 10, (64,))
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        build_model("resnet20", 0, (3, 8, 8))
    with pytest.raises(ValueError, match="MLP expects inputs of 64 features"):
        build_model("mlp", 10, (1, 8, 8))(torch.rand(2, 3, 8, 8))
    assert build_model("mlp", 3, (5,))(torch.rand(4, 5)).shape == (4, 3)


# --- config -------------------------------------------------------------------------------------------------


def test_train_config_schedules_and_validation():
    paper = TrainConfig(epochs=182, schedule="multistep", milestones=(0.5, 0.75))
    assert [paper.lr_at(e) for e in (0, 90, 91, 135, 136)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    cos = TrainConfig(epochs=10, lr=0.2)
    assert cos.lr_at(0) == 0.2 and cos.lr_at(5) == pytest.approx(0.1) and cos.lr_at(9) > 0
    assert TrainConfig(schedule="constant").lr_at(29) == 0.1
    for bad, msg in [({"epochs": -1}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"lr": -1.0}, "lr"),
                     ({"schedule": "step"}, "schedule"), ({"milestones": (0.5, 2)}, "milestones"),
                     ({"select": "best"}, "select")]:
        with pytest.raises(ValueError, match=f"TrainConfig.{msg}"):
            TrainConfig(**bad)


# --- training -----------------------------------------------------------------------------------------------


def test_digits_recipe_reaches_target(digits):
    """The defaults of TrainConfig are the digits recipe: >= 97 % test accuracy, fast."""
    rng = torch.get_rng_state()
    t0 = time.perf_counter()
    model = train_original(digits, "cnn", seed=1, progress=False)
    seconds = time.perf_counter() - t0
    assert torch.equal(torch.get_rng_state(), rng)  # training forks the global RNG
    assert not model.training
    assert accuracy(model, digits.test) >= 97.0
    assert accuracy(model, digits.train) >= 99.0
    assert seconds < 30, seconds


def _small_run(digits, cfg, ckpt=None, callback=None, seed=3, model_seed=1):
    model = build_model("cnn", 10, (1, 8, 8), seed=model_seed)
    return train_model(model, Subset(digits.train, range(400)), cfg, augment=digits.augment, seed=seed,
                       val=digits.val, checkpoint=ckpt, progress=False, callback=callback)


class _Interrupt(Exception):
    pass


def _interrupt_after(k):
    def callback(epoch, stats):
        if epoch == k:
            raise _Interrupt

    return callback


@pytest.mark.parametrize("select", ["last", "best_val"])
def test_checkpoint_resume_is_bit_identical(digits, tmp_path, select):
    cfg = TrainConfig(epochs=4, batch_size=64, select=select)
    ref = _small_run(digits, cfg)
    ckpt = tmp_path / "sub" / "run.pt"
    with pytest.raises(_Interrupt):
        _small_run(digits, cfg, ckpt, callback=_interrupt_after(2))
    assert ckpt.exists() and not ckpt.with_name("run.pt.tmp").exists()
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    epochs_seen = []
    # a differently initialised model: everything comes from the checkpoint
    resumed = _small_run(digits, cfg, ckpt, callback=lambda e, s: epochs_seen.append(e), model_seed=99)
    assert epochs_seen == [3, 4]
    assert _same_state(resumed, ref)
    # a finished checkpoint returns the same model without training
    again = _small_run(digits, cfg, ckpt, callback=lambda e, s: epochs_seen.append(e), model_seed=7)
    assert epochs_seen == [3, 4] and _same_state(again, ref)


def test_checkpoint_extend_epochs_constant_schedule(digits, tmp_path):
    """epochs=k into a checkpoint, then continue to the full count: identical when the schedule does not
    depend on the epoch count."""
    full = _small_run(digits, TrainConfig(epochs=3, batch_size=64, schedule="constant", lr=0.05))
    ckpt = tmp_path / "run.pt"
    _small_run(digits, TrainConfig(epochs=1, batch_size=64, schedule="constant", lr=0.05), ckpt)
    resumed = _small_run(digits, TrainConfig(epochs=3, batch_size=64, schedule="constant", lr=0.05), ckpt)
    assert _same_state(resumed, full)


def test_checkpoint_mismatch_errors(digits, tmp_path):
    ckpt = tmp_path / "run.pt"
    _small_run(digits, TrainConfig(epochs=2, batch_size=64), ckpt)
    with pytest.raises(ValueError, match="different run"):
        _small_run(digits, TrainConfig(epochs=2, batch_size=64, lr=0.05), ckpt)
    with pytest.raises(ValueError, match="different run"):
        _small_run(digits, TrainConfig(epochs=2, batch_size=64), ckpt, seed=4)
    with pytest.raises(ValueError, match="past cfg.epochs=1"):
        _small_run(digits, TrainConfig(epochs=1, batch_size=64), ckpt)


def test_train_model_seeded(digits):
    cfg = TrainConfig(epochs=1, batch_size=64)
    a, b, c = (_small_run(digits, cfg, seed=s) for s in (5, 5, 6))
    assert _same_state(a, b) and not _same_state(a, c)


def test_train_model_argument_errors(digits):
    m = build_model("mlp", 10, (1, 8, 8))
    with pytest.raises(ValueError, match="dataset must not be empty"):
        train_model(m, Subset(digits.train, []), TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="needs a non-empty val"):
        train_model(m, digits.train, TrainConfig(epochs=1, select="best_val"), progress=False)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        train_model(m, digits.train, TrainConfig(epochs=1), seed=-1, progress=False)
    with pytest.raises(TypeError, match="cfg must be a TrainConfig"):
        train_model(m, digits.train, {"epochs": 1}, progress=False)


def test_accuracy_and_predict_proba_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))
    X, y = torch.rand(10, 2, 2), torch.randint(0, 3, (10,))
    ds = TensorDataset(X, y)
    model.train()
    p = predict_proba(model, ds, batch_size=3)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        expected = model(X).softmax(1)
    torch.testing.assert_close(p, expected)
    torch.testing.assert_close(p.sum(1), torch.ones(10))
    expected_acc = 100.0 * (expected.argmax(1) == y).float().mean().item()
    assert accuracy(model, ds, batch_size=4) == pytest.approx(expected_acc)
    with pytest.raises(ValueError, match="dataset must not be empty"):
        accuracy(model, Subset(ds, []))
