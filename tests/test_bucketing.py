"""BucketSampler and pad_collate with gluon.data.DataLoader."""
import mxnet as mx
import numpy as np
import pytest

import fusedrnn


def dataset(n=103, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 60, size=n)
    seqs = [rng.standard_normal((L, 3)).astype(np.float32) for L in lengths]
    labels = rng.integers(0, 5, size=n)
    return lengths, list(zip(seqs, labels))


@pytest.mark.parametrize("last_batch", ["keep", "discard"])
@pytest.mark.parametrize("num_buckets", [None, 4])
def test_batches_cover_the_data_with_little_padding(last_batch, num_buckets):
    lengths, _ = dataset()
    sampler = fusedrnn.BucketSampler(lengths, 16, last_batch=last_batch, seed=1,
                                     num_buckets=num_buckets)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    seen = sorted(i for b in batches for i in b)
    expect = len(lengths) if last_batch == "keep" else len(lengths) // 16 * 16
    assert len(seen) == expect == len(set(seen))
    assert all(len(b) == 16 for b in batches if len(b) != len(lengths) % 16)
    # Random batches of the same size waste far more.
    rng = np.random.default_rng(2)
    perm = rng.permutation(len(lengths))
    random_pad = 1 - lengths.sum() / sum(len(perm[i:i + 16]) * lengths[perm[i:i + 16]].max()
                                         for i in range(0, len(perm), 16))
    assert sampler.padding_fraction < random_pad / 2
    assert 0 <= sampler.padding_fraction < 0.25
    assert [list(b) for b in sampler] != batches  # a new order every epoch


def test_loader_yields_padded_batches_with_lengths():
    lengths, data = dataset(40)
    loader = mx.gluon.data.DataLoader(data, batch_sampler=fusedrnn.BucketSampler(lengths, 8,
                                                                                 seed=0),
                                      batchify_fn=fusedrnn.pad_collate)
    total = 0
    for batch, batch_lengths, labels in loader:
        L = batch_lengths.asnumpy()
        assert batch.shape == (len(L), L.max(), 3) and labels.shape == (len(L),)
        for row, n in enumerate(L):
            assert not batch[row].asnumpy()[n:].any()
        total += len(L)
    assert total == 40


def test_layer_on_bucketed_batch_equals_each_sample_alone():
    lengths, data = dataset(12, seed=3)
    layer = fusedrnn.GRU(4, layout="NTC", use_sequence_length=True)
    layer.initialize()
    batch, batch_lengths = fusedrnn.pad_collate([s for s, _ in data[:5]])
    out, _ = layer(batch, layer.begin_state(batch_size=5), sequence_length=batch_lengths)
    for row in range(5):
        n = int(batch_lengths.asnumpy()[row])
        alone, _ = layer(batch[row:row + 1, :n], layer.begin_state(batch_size=1),
                         sequence_length=mx.nd.array([n]))
        np.testing.assert_allclose(out[row:row + 1, :n].asnumpy(), alone.asnumpy(), rtol=1e-5,
                                   atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="lengths"):
        fusedrnn.BucketSampler([3, -1], 2)
    with pytest.raises(ValueError, match="lengths"):
        fusedrnn.BucketSampler([3.5, 2.0], 2)
    with pytest.raises(ValueError, match="batch_size"):
        fusedrnn.BucketSampler([3, 2], 0)
    with pytest.raises(ValueError, match="last_batch"):
        fusedrnn.BucketSampler([3, 2], 1, last_batch="rollover")
    with pytest.raises(ValueError, match="empty batch"):
        fusedrnn.pad_collate([])
