"""pyunlearn.data: one seeded stratified split, forget-set specs and their errors, labels, seeded loaders."""

import math

import pytest
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from pyunlearn.data import (
    DataSplits,
    ForgetSpec,
    RandomTranslate,
    from_datasets,
    from_tensors,
    labels_of,
    load_digits,
    make_loader,
    select_forget,
    stratified_split,
)


@pytest.fixture(scope="module")
def digits():
    return load_digits(split_seed=0)


def _indexed(n=300, k=3, **kw):
    """from_tensors over X = the sample index, so every split tells which original samples it holds."""
    X = torch.arange(n, dtype=torch.float32)[:, None]  # [n, 1]
    y = torch.arange(n) % k  # [n]
    return from_tensors(X, y, **kw)


def _ids(ds):
    return ds.tensors[0].flatten().long()


# --- splits -------------------------------------------------------------------------------------------------


def test_load_digits_contents(digits):
    assert isinstance(digits, DataSplits)
    got = (digits.name, digits.num_classes, digits.input_shape, digits.split_seed)
    assert got == ("digits", 10, (1, 8, 8), 0)
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1259, 179, 359)
    x, y = digits.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.dim() == 0
    X = torch.cat([ds.tensors[0] for ds in (digits.train, digits.val, digits.test)])
    assert X.min() == 0 and X.max() == 1
    assert isinstance(digits.augment, RandomTranslate) and digits.augment.max_shift == 1


def test_split_is_a_partition_and_sorted():
    s = _indexed(301, 4, split_seed=5)
    parts = [_ids(d) for d in (s.train, s.val, s.test)]
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(301))
    for p in parts:
        assert torch.equal(p, p.sort().values)


def test_split_deterministic_per_seed():
    a, b, c = (_indexed(split_seed=s) for s in (3, 3, 4))
    for name in ("train", "val", "test"):
        assert torch.equal(_ids(getattr(a, name)), _ids(getattr(b, name)))
    assert not torch.equal(_ids(a.test), _ids(c.test))
    d1, d2 = load_digits(split_seed=7), load_digits(split_seed=7)
    assert torch.equal(d1.train.tensors[0], d2.train.tensors[0])


def test_split_stratified(digits):
    y_all = torch.cat([labels_of(d) for d in (digits.train, digits.val, digits.test)])
    n_c = torch.bincount(y_all, minlength=10)
    for ds, frac in ((digits.val, 0.1), (digits.test, 0.2)):
        got = torch.bincount(labels_of(ds), minlength=10)
        assert (got - frac * n_c).abs().max() <= 0.5 + 1e-9, got


def test_split_keeps_a_train_sample_of_tiny_classes():
    y = torch.tensor([0] * 20 + [1, 2, 2])
    tr, va, te = stratified_split(y, seed=0, val_fraction=0.3, test_fraction=0.4)
    assert set(y[tr].tolist()) == {0, 1, 2}
    assert len(tr) + len(va) + len(te) == len(y)


@pytest.mark.parametrize(
    "kw, err",
    [
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"test_fraction": 1.2}, "test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "leave a train set"),
        ({"num_classes": 2}, "num_classes=2"),
        ({"num_classes": 0}, "num_classes"),
    ],
    ids=["val<0", "val=1", "test=0", "test>1", "sum=1", "label>=K", "K=0"],
)
def test_from_tensors_bad_arguments(kw, err):
    with pytest.raises(ValueError, match=err):
        _indexed(30, 3, **kw)


def test_from_tensors_bad_tensors():
    with pytest.raises(ValueError, match="same length"):
        from_tensors(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class ids"):
        from_tensors(torch.zeros(4, 2), torch.tensor([0.5, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=">= 0"):
        from_tensors(torch.zeros(4, 2), torch.tensor([0, -1, 0, 1]))
    with pytest.raises(ValueError, match="at least 2 dims"):
        from_tensors(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    s = from_tensors(torch.zeros(10, 2, dtype=torch.int32), torch.tensor([0.0, 1.0] * 5), num_classes=3)
    assert s.train.tensors[0].dtype == torch.float32 and s.num_classes == 3


def test_from_datasets():
    train = TensorDataset(torch.rand(12, 3, 4, 4), torch.arange(12) % 3)
    test = TensorDataset(torch.rand(5, 3, 4, 4), torch.tensor([0, 1, 2, 3, 0]))
    s = from_datasets(train, test, name="toy")
    got = (s.num_classes, s.input_shape, len(s.val), s.split_seed, s.augment)
    assert got == (4, (3, 4, 4), 0, None, None)
    s = from_datasets(train, test, val=Subset(test, [0]), num_classes=6)
    assert s.num_classes == 6 and len(s.val) == 1
    with pytest.raises(TypeError, match="train must be a map-style dataset"):
        from_datasets(object(), test)
    with pytest.raises(TypeError, match=r"must yield \(x, y\) pairs, item 0 is a int"):
        from_datasets([1, 2], test)
    with pytest.raises(ValueError, match="num_classes=3"):
        from_datasets(train, test, num_classes=3)


# --- augment ------------------------------------------------------------------------------------------------


def test_random_translate_is_a_zero_padded_shift():
    x = torch.rand(64, 2, 5, 6) + 1.0  # nonzero everywhere: zeros can only come from the padding
    out = RandomTranslate(1)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    seen = set()
    for i in range(len(x)):
        pad = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
        shifts = [(dy, dx) for dy in range(3) for dx in range(3)]
        hits = [(dy, dx) for dy, dx in shifts if torch.equal(out[i], pad[:, dy:dy + 5, dx:dx + 6])]
        assert len(hits) == 1, i
        seen.add(hits[0])
    assert len(seen) == 9  # every shift in {-1, 0, 1}^2 occurs in 64 draws


def test_random_translate_seeded_and_flip():
    x = torch.rand(16, 1, 8, 8)
    a = RandomTranslate(1)(x, torch.Generator().manual_seed(3))
    b = RandomTranslate(1)(x, torch.Generator().manual_seed(3))
    c = RandomTranslate(1)(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(RandomTranslate(0)(x, torch.Generator()), x)
    flipped = RandomTranslate(0, flip=True)(x, torch.Generator().manual_seed(0))
    same = [torch.equal(flipped[i], x[i]) for i in range(16)]
    mirrored = [torch.equal(flipped[i], x[i].flip(-1)) for i in range(16)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(mirrored) and not all(mirrored)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        RandomTranslate(1)(torch.rand(8, 8), torch.Generator())
    with pytest.raises(ValueError, match="max_shift"):
        RandomTranslate(-1)


# --- forget sets --------------------------------------------------------------------------------------------


def _check_partition(splits, fs):
    n = len(splits.train)
    f = fs.forget_indices
    assert f.dtype == torch.int64 and torch.equal(f, f.sort().values)
    assert list(fs.forget.indices) == f.tolist() and fs.forget.dataset is splits.train
    assert fs.retain.dataset is splits.train
    r = torch.as_tensor(fs.retain.indices)
    assert torch.equal(r, r.sort().values)
    assert torch.equal(torch.cat([f, r]).sort().values, torch.arange(n))


def test_forget_class(digits):
    fs = select_forget(digits, "class:3")
    _check_partition(digits, fs)
    y = labels_of(digits.train)
    assert (fs.kind, fs.forget_class, fs.spec) == ("class", 3, "class:3")
    assert torch.equal(fs.forget_indices, (y == 3).nonzero().flatten())
    assert (labels_of(fs.retain) != 3).all()


def test_forget_random_seeded(digits):
    fs = select_forget(digits, "random:0.1", seed=1)
    _check_partition(digits, fs)
    assert (fs.kind, fs.forget_class, fs.seed) == ("random", None, 1)
    assert len(fs.forget) == round(0.1 * len(digits.train))
    again = select_forget(digits, ForgetSpec("random", 0.1), seed=1)
    other = select_forget(digits, "random:0.1", seed=2)
    assert torch.equal(fs.forget_indices, again.forget_indices)
    assert not torch.equal(fs.forget_indices, other.forget_indices)


def test_forget_indices_inline_and_file(digits, tmp_path):
    fs = select_forget(digits, "indices:9, 1,5")
    _check_partition(digits, fs)
    assert fs.forget_indices.tolist() == [1, 5, 9] and fs.forget_class is None
    path = tmp_path / "forget.txt"
    path.write_text("# forget these\n9\n1, 5   # trailing comment\n\n1258\n")
    fs = select_forget(digits, f"indices:@{path}")
    assert fs.forget_indices.tolist() == [1, 5, 9, 1258]
    x, y = fs.forget[3]
    assert torch.equal(x, digits.train[1258][0]) and torch.equal(y, digits.train[1258][1])


def test_forget_spec_roundtrip():
    for text in ("class:3", "random:0.25", "indices:1,5,9"):
        assert str(ForgetSpec.parse(text)) == text


@pytest.mark.parametrize(
    "spec, exc, msg",
    [
        ("class:10", ValueError, r"class id must be in \[0, 10\)"),
        ("class:-1", ValueError, r"class id must be in \[0, 10\)"),
        ("class:x", ValueError, "integer class id"),
        ("random:0", ValueError, r"fraction must be in \(0, 1\)"),
        ("random:1", ValueError, r"fraction must be in \(0, 1\)"),
        ("random:1.5", ValueError, r"fraction must be in \(0, 1\)"),
        ("random:nan", ValueError, r"fraction must be in \(0, 1\)"),
        ("random:0.0001", ValueError, "empty forget set"),
        ("random:ten", ValueError, "needs a number"),
        ("indices:1,1,2", ValueError, r"must not repeat, got duplicates \[1\]"),
        ("indices:3,1259", IndexError, r"must be in \[0, 1259\).*\[1259\]"),
        ("indices:-1", IndexError, r"\[-1\]"),
        ("indices:1;2", ValueError, "must be integers"),
        ("indices:", ValueError, "must look like"),
        ("classes:3", ValueError, "must look like"),
        ("random", ValueError, "must look like"),
        ("indices:@/nonexistent/forget.txt", ValueError, "does not exist"),
    ],
)
def test_forget_spec_errors(digits, spec, exc, msg):
    with pytest.raises(exc, match=msg):
        select_forget(digits, spec)


def test_forget_errors_empty_file_missing_class_whole_train(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# nothing\n")
    s = _indexed(30, 3, num_classes=5)
    with pytest.raises(ValueError, match="empty forget set"):
        select_forget(s, f"indices:@{path}")
    with pytest.raises(ValueError, match="class 4 has no samples in the train set"):
        select_forget(s, "class:4")
    with pytest.raises(ValueError, match="retain set would be empty"):
        select_forget(s, ForgetSpec("indices", tuple(range(len(s.train)))))
    with pytest.raises(TypeError, match="spec must be a str or ForgetSpec"):
        select_forget(s, 3)
    with pytest.raises(TypeError, match="splits must be a DataSplits"):
        select_forget(s.train, "class:1")


# --- labels, loaders ----------------------------------------------------------------------------------------


class _Plain(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(2), 3 - i


class _WithTargets(_Plain):
    targets = (1, 1, 0, 2)


def test_labels_of_every_path():
    td = TensorDataset(torch.rand(6, 2), torch.tensor([5, 4, 3, 2, 1, 0]))
    assert labels_of(td).tolist() == [5, 4, 3, 2, 1, 0]
    sub = Subset(Subset(td, [5, 3, 1, 0]), [3, 0])
    assert labels_of(sub).tolist() == [5, 0]
    assert labels_of(ConcatDataset([sub, td])).tolist() == [5, 0, 5, 4, 3, 2, 1, 0]
    assert labels_of(_Plain()).tolist() == [3, 2, 1, 0]
    assert labels_of(_WithTargets()).tolist() == [1, 1, 0, 2]
    assert labels_of(Subset(td, [])).dtype == torch.int64
    assert labels_of(Subset(td, torch.tensor([4, 1]))).tolist() == [1, 4]
    assert labels_of(Subset(td, range(2, 4))).tolist() == [3, 2]
    with pytest.raises(TypeError, match="map-style"):
        labels_of(object())


def test_make_loader_seeded(digits):
    def order(loader):
        return [torch.cat([y for _, y in loader]) for _ in range(2)]  # two epochs

    a = order(make_loader(digits.train, 100, shuffle=True, seed=5))
    b = order(make_loader(digits.train, 100, shuffle=True, seed=5))
    c = order(make_loader(digits.train, 100, shuffle=True, seed=6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], c[0])
    plain = make_loader(digits.train, 100, shuffle=False, seed=0)
    assert torch.equal(torch.cat([y for _, y in plain]), labels_of(digits.train))
    assert math.ceil(len(digits.train) / 100) == len(plain) and plain.num_workers == 0
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        make_loader(digits.train, 0, shuffle=False, seed=0)
