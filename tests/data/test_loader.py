import torch

from kangae.data import BatchLoader, ImageSet, random_shift


def _set(n=103):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    return ImageSet(images, torch.arange(n) % 10, tuple("0123456789"), "t", "train", "mem")


def _ids(loader):
    return torch.cat([y_ids for _, y_ids in ((x, (x[:, 0, 0, 0] * 255).round().long()) for x, _ in loader)])


def test_every_image_once_per_epoch_in_0_1():
    loader = BatchLoader(_set(), batch_size=10, shuffle=True, seed=1)
    assert len(loader) == 11
    x, _ = next(iter(loader))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert sorted(_ids(loader).tolist()) == list(range(103))


def test_order_depends_only_on_seed_and_epoch():
    a, b = BatchLoader(_set(), 10, shuffle=True, seed=1), BatchLoader(_set(), 10, shuffle=True, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert torch.equal(_ids(a), _ids(b))
    b.set_epoch(4)
    assert not torch.equal(_ids(a), _ids(b))


def test_resuming_at_a_batch_yields_the_remaining_batches():
    full = BatchLoader(_set(), 10, shuffle=True, seed=2, max_shift=1)
    full.set_epoch(5)
    batches = [x for x, _ in full]
    part = BatchLoader(_set(), 10, shuffle=True, seed=2, max_shift=1)
    part.set_epoch(5, start_batch=4)
    rest = [x for x, _ in part]
    assert len(rest) == len(batches) - 4
    assert all(torch.equal(a, b) for a, b in zip(batches[4:], rest))


def test_ranks_split_an_epoch_without_overlap():
    shards = [BatchLoader(_set(100), 10, shuffle=True, seed=0, rank=r, world_size=2) for r in (0, 1)]
    ids = [set(_ids(s).tolist()) for s in shards]
    assert not ids[0] & ids[1] and ids[0] | ids[1] == set(range(100))


def test_drop_last():
    assert len(BatchLoader(_set(), 10, drop_last=True)) == 10


def test_random_shift_moves_a_pixel_by_at_most_the_shift():
    x = torch.zeros(500, 1, 9, 9)
    x[:, 0, 4, 4] = 1
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out.sum((1, 2, 3)), torch.ones(500))  # nothing lost at this distance
    where = out[:, 0].flatten(1).argmax(1)
    rows, cols = where // 9, where % 9
    assert set(rows.tolist()) == {2, 3, 4, 5, 6} and set(cols.tolist()) == {2, 3, 4, 5, 6}
    assert torch.equal(random_shift(x, 0, torch.Generator()), x)
