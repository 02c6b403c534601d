"""The neighbour vote blended into the stacked model's image branch."""
from __future__ import annotations

import numpy as np
import pytest

from memestream.errors import ModelError
from memestream.neighbours import NeighbourVote, blend, vote


def _clusters(rng, n=20, d=8):
    a = rng.normal(0, 0.05, (n, d)) + np.eye(d)[0]
    b = rng.normal(0, 0.05, (n, d)) + np.eye(d)[1]
    return np.vstack([a, b]), np.array([0] * n + [1] * n)


def test_vote_follows_the_nearest_labels_and_weights_closer_ones_more():
    rng = np.random.default_rng(0)
    x, y = _clusters(rng)
    nv = NeighbourVote.fit(x, y, 2, neighbours=5)
    p = nv.probs(np.vstack([np.eye(8)[0], np.eye(8)[1]]))
    assert p.shape == (2, 2) and np.allclose(p.sum(axis=1), 1)
    assert p[0, 0] > 0.99 and p[1, 1] > 0.99
    # between the clusters, a little closer to class 1, every row voting: class 1 wins, not by much
    q = NeighbourVote.fit(x, y, 2, neighbours=len(y)).probs((0.45 * np.eye(8)[0] + 0.55 * np.eye(8)[1])[None, :])
    assert 0.5 < q[0, 1] < 0.99
    # the prior keeps every vote off 0 and 1 (log-probabilities stay finite in the stacker)
    assert 0 < p.min() and p.max() < 1
    assert vote(nv.vectors, y, np.zeros((0, 8)), 2).shape == (0, 2)


def test_vote_uses_only_k_neighbours_and_clamps_k():
    train = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]])
    unit = train / np.linalg.norm(train, axis=1, keepdims=True)
    labels = np.array([0, 0, 1])
    one = vote(unit.astype(np.float32), labels, np.array([[0.1, 1.0]]), 2, neighbours=1)
    assert one[0, 1] > 0.99  # only its nearest (class 1) votes
    many = vote(unit.astype(np.float32), labels, np.array([[0.1, 1.0]]), 2, neighbours=50)  # clamped to 3
    assert 0.5 < many[0, 1] < one[0, 1]


def test_blend_is_the_renormalised_geometric_mean():
    a = np.array([[0.9, 0.1], [0.5, 0.5]])
    b = np.array([[0.1, 0.9], [0.8, 0.2]])
    g = blend(a, b)
    assert np.allclose(g[0], [0.5, 0.5])
    want = np.sqrt([0.4, 0.1])
    assert np.allclose(g[1], want / want.sum())


def test_save_load_round_trip_and_clear_errors(tmp_path):
    rng = np.random.default_rng(1)
    x, y = _clusters(rng)
    nv = NeighbourVote.fit(x, y, 2, neighbours=7, temperature=0.2)
    nv.save(tmp_path / "nb")
    back = NeighbourVote.load(tmp_path / "nb")
    assert back.neighbours == 7 and back.temperature == 0.2 and back.classes_count == 2
    q = rng.normal(size=(5, 8))
    assert np.allclose(back.probs(q), nv.probs(q))
    with pytest.raises(ModelError, match="expects 8-d"):
        nv.probs(np.zeros((1, 3)))
    (tmp_path / "nb" / "neighbours.npz").write_bytes(b"not an npz")
    with pytest.raises(ModelError, match="unreadable"):
        NeighbourVote.load(tmp_path / "nb")
    with pytest.raises(ModelError, match="do not fit"):
        NeighbourVote(np.zeros((3, 2), np.float32), np.zeros(2, np.int64), 2)
