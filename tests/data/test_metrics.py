"""exact_match, token_hits and TaskAccuracy (overall and per level, both modes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archsearch.data.metrics import TaskAccuracy, exact_match, token_hits

V = 10


def _logits(pred):
    return F.one_hot(torch.tensor(pred), V).float()


LABELS = torch.tensor([[-100, 3, 4, -100], [-100, 1, 2, -100], [-100, -100, -100, -100]])
PRED = [[9, 3, 4, 9], [9, 1, 0, 9], [1, 1, 1, 1]]  # sample 0 right, 1 half right, 2 has no labels


def test_exact_match_and_token_hits():
    assert exact_match(_logits(PRED), LABELS).tolist() == [True, False, False]
    hits, total = token_hits(_logits(PRED), LABELS)
    assert hits.tolist() == [2, 1, 0] and total.tolist() == [2, 2, 0]
    with pytest.raises(ValueError, match="disagree"):
        exact_match(_logits(PRED)[:, :3], LABELS)


def test_task_accuracy_per_level_and_modes():
    seq = TaskAccuracy(levels=(4, 8), mode="sequence")
    seq.update(_logits(PRED[:2]), LABELS[:2], torch.tensor([4, 8]))
    seq.update(_logits(PRED[:1]), LABELS[:1], torch.tensor([8]))
    out = seq.compute()
    assert out["acc"].item() == pytest.approx(2 / 3)
    assert out["acc/level_4"].item() == 1.0 and out["acc/level_8"].item() == 0.5

    tok = TaskAccuracy(levels=(4, 8, 16), mode="token")
    tok.update(_logits(PRED[:2]), LABELS[:2], torch.tensor([4, 8]))
    out = tok.compute()
    assert out["acc"].item() == pytest.approx(3 / 4) and out["acc/level_8"].item() == 0.5
    assert "acc/level_16" not in out  # never seen
    tok.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert tok.compute()["acc"].item() == 0.0
    with pytest.raises(ValueError, match="mode"):
        TaskAccuracy(mode="bleu")
