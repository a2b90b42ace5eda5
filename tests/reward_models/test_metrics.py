"""Metrics against hand-checked reference values (scipy/sklearn documentation examples)."""

import numpy as np
import pytest

from reward_models.metrics import (
    EpisodeScore,
    auroc,
    completion_class,
    compute_metrics,
    kendall_tau,
    label_rubric,
    progress_to_rubric,
    rankdata,
    spearman,
    voc,
)


def test_rank_statistics_match_reference_values():
    assert rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
    assert kendall_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-0.47140452079103173)
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)  # ties count one half
    assert np.isnan(auroc([0.2, 0.3], [True, True]))
    assert np.isnan(spearman([1, 2, 3], [4, 4, 4]))


def test_voc_and_completion_rules():
    assert voc(np.linspace(0, 1, 10)) == pytest.approx(1.0)
    assert voc(np.linspace(1, 0, 10)) == pytest.approx(-1.0)
    assert completion_class([0, 0.5, 0.7, 0.9, 0.95, 0.99]) == "success"
    # final > 0.8 but the last third is too low on average -> not a success
    assert completion_class([0, 0, 0, 0, 0, 0, 0, 0, 0.85]) == "fail"
    assert completion_class([0, 0.3, 0.5, 0.5, 0.5, 0.5]) == "partial"
    assert completion_class([0, 0.1, 0.1, 0.2, 0.2, 0.3]) == "fail"
    assert progress_to_rubric(0.0) == 1 and progress_to_rubric(1.0) == 5 and progress_to_rubric(0.5) == 3
    assert label_rubric("success", None, None) == 5
    assert label_rubric("partial", None, None) == 3
    assert label_rubric(None, False, 0.99) == 4  # failed episodes never get the top score
    assert label_rubric(None, None, None) is None


def _ep(i, phi, success=None, outcome=None, policy=None):
    return EpisodeScore(
        episode_index=i, progress=np.asarray(phi, float), success=success, outcome=outcome, policy=policy
    )


def test_compute_metrics_with_all_labels():
    up = np.linspace(0, 1, 12)
    flat_low = np.concatenate([np.linspace(0, 0.3, 6), np.full(6, 0.3)])
    scores = [
        _ep(0, up, success=True, policy="good"),
        _ep(1, up, success=True, policy="good"),
        _ep(2, flat_low, success=False, policy="bad"),
        _ep(3, up * 0.95, success=False, policy="bad"),  # reaches 0.95 = 1 - δ: a false positive
    ]
    m = compute_metrics(scores)
    assert m["voc_plus"]["value"] == pytest.approx(1.0) and m["voc_plus"]["n"] == 2
    assert m["success_auroc"]["value"] == pytest.approx(1.0)
    assert m["success_auroc"]["precision"] == pytest.approx(2 / 3)
    assert m["success_auroc"]["recall"] == pytest.approx(1.0)
    assert m["completion_accuracy"]["value"] == pytest.approx(0.75)
    assert m["completion_accuracy"]["confusion"]["fail"]["success"] == 1
    assert m["kendall_tau"]["value"] == pytest.approx(1.0)
    assert m["end_score_mae"]["value"] == pytest.approx((0 + 0 + 1 + 4) / 4)  # predicted 5,5,2,5 vs labels 5,5,1,1
    assert len(m["episodes"]) == 4


def test_missing_labels_give_null_with_reason():
    m = compute_metrics([_ep(0, np.linspace(0, 1, 5)), _ep(1, np.linspace(0, 0.5, 5))])
    for key in ("voc_plus", "voc_minus", "completion_accuracy", "success_auroc", "end_score_mae", "kendall_tau"):
        assert m[key]["value"] is None and m[key]["reason"], key
    only_success = compute_metrics([_ep(0, np.linspace(0, 1, 5), success=True)])
    assert only_success["voc_minus"]["value"] is None
    assert "both" in only_success["success_auroc"]["reason"]


def test_episode_score_validates_lengths():
    with pytest.raises(ValueError, match="true_progress"):
        EpisodeScore(episode_index=3, progress=np.zeros(4), true_progress=np.zeros(5))
    with pytest.raises(ValueError, match="empty"):
        EpisodeScore(episode_index=3, progress=np.zeros(0))
