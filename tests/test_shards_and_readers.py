import numpy as np
import pytest

from frugalnas.data import curriculum_shards, open_dataset
from frugalnas.data.torch_dataset import ImageSplit


def test_shards_keep_curriculum_order_and_class_balance():
    rng = np.random.default_rng(0)
    ids = rng.permutation(1000)[:300]
    labels = ids % 10
    position = {int(i): p for p, i in enumerate(ids)}
    shards = curriculum_shards(ids, labels, 4)
    assert sorted(np.concatenate(shards).tolist()) == sorted(ids.tolist())
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    for shard in shards:
        assert [position[int(i)] for i in shard] == sorted(position[int(i)] for i in shard)
    per_worker = np.array([np.bincount(shard % 10, minlength=10) for shard in shards])  # (workers, classes)
    assert np.all(per_worker.max(axis=0) - per_worker.min(axis=0) <= 1)  # each class split evenly
    # each worker sees the whole curriculum: its first and last images come from the two ends
    for shard in shards:
        assert position[int(shard[0])] < 40 and position[int(shard[-1])] > 260


def test_sort_then_split_would_fail_this_test():
    """The naive split the shards replace: one worker gets all the easy images."""
    ids = np.arange(100)
    naive = np.array_split(ids, 2)
    assert naive[0].max() < naive[1].min()
    shards = curriculum_shards(ids, ids % 5, 2)
    assert shards[0].max() > shards[1].min()


def test_shards_with_uneven_classes():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 1)
    shards = curriculum_shards(np.arange(10), labels, 3)
    assert sorted(map(len, shards)) == [3, 3, 4]
    with pytest.raises(ValueError):
        curriculum_shards(np.arange(3), np.arange(2), 2)


def test_torch_dataset(digits_dataset):
    split = ImageSplit(open_dataset(digits_dataset), "test")
    image, label, image_id = split[0]
    assert image.shape == (1, 8, 8) and 0 <= float(image.min()) and float(image.max()) <= 1
    x, y = split.batch(split.ids[[2, 1]])
    assert x.shape == (2, 1, 8, 8) and y.tolist() == split.labels[[2, 1]].tolist()


def test_ray_data_split_and_curriculum_shards(ray_session, digits_dataset):
    from frugalnas.runtime.data import preserve_order, read_split, subset_shards

    preserve_order()
    stored = open_dataset(digits_dataset)
    ids, labels = stored.labels("train")
    rows = read_split(digits_dataset, "train").take_all()
    assert sorted(r["id"] for r in rows) == sorted(ids.tolist())
    _, images, _ = stored.arrays("train")
    first = next(r for r in rows if r["id"] == ids[0])
    np.testing.assert_allclose(first["image"], images[0].transpose(2, 0, 1) / 255.0, atol=1e-6)

    order = np.random.default_rng(1).permutation(ids)[:120]  # a subset in some curriculum order
    shards = subset_shards(digits_dataset, "train", order, 2)
    position = {int(i): p for p, i in enumerate(order)}
    label_of = dict(zip(ids.tolist(), labels.tolist()))
    seen = []
    for shard in shards:
        got = [int(r["id"]) for r in shard.take_all()]
        assert got == sorted(got, key=position.get)  # same curriculum order
        counts = np.bincount([label_of[i] for i in got], minlength=10)
        expected = np.bincount([label_of[int(i)] for i in order], minlength=10) / 2
        assert np.all(np.abs(counts - expected) <= 0.5)
        seen += got
    assert sorted(seen) == sorted(order.tolist())
