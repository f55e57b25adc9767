"""dps_map/data.py and the training sets built on it: sharding by sorted id, the demo crops' geometry, and the
seeds of the training crops, each against values computed here from their documented definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from dps_map.data import TRAIN_PHOTOS, Item, demo_crops, load_photo, shard
from dps_map.errors import ConfigError
from dps_map.training.common import CropSampler, training_images


def test_shards_split_the_sorted_ids_round_robin_whatever_the_order_given():
    ids = [f"img{k:02d}" for k in range(10)]
    items = [Item(i, torch.zeros(1)) for i in ids]
    shuffled = [items[k] for k in np.random.default_rng(0).permutation(10)]
    for n in (1, 3, 4):
        parts = [[it.id for it in shard(shuffled, n, k)] for k in range(n)]
        assert parts == [ids[k::n] for k in range(n)]  # shard k: sorted ids k, k + n, ...
        assert sorted(sum(parts, [])) == ids  # every id exactly once
    with pytest.raises(ConfigError, match=r"data.shard=3 must lie in \[0, data.num_shards=3\)"):
        shard(items, 3, 3)


def test_demo_crops_are_half_the_short_side_spread_along_the_long_side():
    """Per photo: squares of side short // 2, lefts evenly spread over [0, w - side], tops over [0, h - side] in
    reverse, each resized (PIL bicubic) to size x size and mapped to [-1, 1]."""
    arr = load_photo("chelsea")  # 300 x 451
    h, w = arr.shape[:2]
    side = min(h, w) // 2
    items = demo_crops(32, 3, ("chelsea",))
    assert [it.id for it in items] == ["chelsea_0", "chelsea_1", "chelsea_2"]
    boxes = [[int(round((h - side) * (2 - k) / 2)), int(round((w - side) * k / 2)), side] for k in range(3)]
    assert side == 150 and [it.info["box"] for it in items] == boxes
    for item, (top, left, _) in zip(items, boxes):
        crop = Image.fromarray(arr[top:top + side, left:left + side]).resize((32, 32), Image.BICUBIC)
        expected = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
        assert torch.equal(item.image, expected)


def test_training_crops_follow_their_seed():
    """The tiny prior's crop stream and the adapters' fixed training set are functions of their seeds: the same
    seed gives the same crops, another seed other crops."""
    def crops(seed):
        return CropSampler(["astronaut", "rocket"], 16, 0.125, 0.5, 16, True, seed=seed).batch(3)

    assert torch.equal(crops(3), crops(3)) and not torch.equal(crops(3), crops(4))

    def fixed_set(seed):
        data = {"kind": "crops", "n_images": 2, "photos": None, "crop_min": 0.125, "crop_max": 0.5, "min_side": 16,
                "seed": seed}
        return training_images(OmegaConf.create({"data": data}), 16)[0]

    assert torch.equal(fixed_set(0), fixed_set(0)) and not torch.equal(fixed_set(0), fixed_set(1))
    # the fixed set is the first n crops of the seeded stream, without flips
    assert torch.equal(fixed_set(1), CropSampler(TRAIN_PHOTOS, 16, 0.125, 0.5, 16, False, seed=1).batch(2))
