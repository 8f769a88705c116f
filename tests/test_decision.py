"""decision.py: each policy against hand-computed cases, calibration on a miscalibrated model, and old
settings deciding exactly as before."""
import numpy as np
import pytest
from scipy.special import expit

from decision import Calibration, Decision, calibration_error, fit_calibration
from exporting import stored_decision
from metric import fit_decision_on_dev
from utils import DataError

PROBS = np.array([[0.9, 0.6, 0.2, 0.7],    # three pass
                  [0.1, 0.3, 0.3, 0.2],    # none passes; a tie at 0.3 between labels 1 and 2
                  [0.55, 0.4, 0.95, 0.1]], dtype="float32")
HALF = np.full(4, 0.5, dtype="float32")


def test_thresholds_alone_are_the_reference_rule():
    assert Decision(HALF).label_ids(PROBS) == [[0, 1, 3], [], [0, 2]]
    assert Decision(np.array([0.95, 0.5, 0.5, 0.5], dtype="float32")).label_ids(PROBS) == [[1, 3], [], [2]]


def test_min_labels_adds_the_most_probable_and_ties_go_to_the_lower_id():
    assert Decision(HALF, min_labels=1).label_ids(PROBS) == [[0, 1, 3], [1], [0, 2]]
    assert Decision(HALF, min_labels=2).label_ids(PROBS) == [[0, 1, 3], [1, 2], [0, 2]]
    assert Decision(HALF, min_labels=3).label_ids(PROBS) == [[0, 1, 3], [1, 2, 3], [0, 1, 2]]


def test_max_labels_keeps_the_most_probable_of_those_that_pass():
    assert Decision(HALF, max_labels=2).label_ids(PROBS) == [[0, 3], [], [0, 2]]
    assert Decision(HALF, max_labels=1).label_ids(PROBS) == [[0], [], [2]]
    assert Decision(HALF, min_labels=1, max_labels=1).label_ids(PROBS) == [[0], [1], [2]]


def test_k_larger_than_the_label_count_gives_every_label():
    assert Decision(HALF, min_labels=9).label_ids(PROBS) == [[0, 1, 2, 3]] * 3
    assert Decision(HALF, max_labels=9).label_ids(PROBS) == [[0, 1, 3], [], [0, 2]]
    ids, scores = Decision(HALF, top_k=9).top(PROBS)
    assert ids.tolist()[1] == [1, 2, 3, 0] and scores.shape == (3, 4)


def test_a_label_with_threshold_one_is_never_chosen_but_is_in_top_k():
    off = np.array([1.0, 0.5, 0.5, 0.5], dtype="float32")
    assert Decision(off).label_ids(PROBS) == [[1, 3], [], [2]]
    assert Decision(off, min_labels=4).label_ids(PROBS) == [[1, 2, 3]] * 3
    ids, scores = Decision(off, top_k=1).top(PROBS)
    assert ids[:, 0].tolist() == [0, 1, 2]
    np.testing.assert_allclose(scores[:, 0], [0.9, 0.3, 0.95])


def test_top_k_is_most_probable_first_whatever_passes():
    ids, scores = Decision(HALF, top_k=2).top(PROBS)
    assert ids.tolist() == [[0, 3], [1, 2], [2, 0]]
    np.testing.assert_allclose(scores, [[0.9, 0.7], [0.3, 0.3], [0.95, 0.55]])


@pytest.mark.parametrize("settings, fragment", [
    ({"min_labels": -1}, "min_labels must be 0 or more"),
    ({"top_k": -2}, "top_k must be 0 or more"),
    ({"max_labels": 0}, "max_labels must be 1 or more"),
    ({"min_labels": 3, "max_labels": 2}, "min_labels 3 is more than max_labels 2"),
])
def test_bad_settings_name_the_setting_and_value(settings, fragment):
    with pytest.raises(ValueError, match=fragment):
        Decision(HALF, **settings)


def test_overrides_replace_only_what_is_given():
    stored = Decision(HALF, max_labels=2, top_k=1)
    assert stored.overridden().label_ids(PROBS) == stored.label_ids(PROBS)
    assert stored.overridden(max_labels=0).max_labels is None
    assert stored.overridden(threshold=0.25, min_labels=1).label_ids(PROBS) == [[0, 3], [1, 2], [0, 2]]
    with pytest.raises(ValueError, match="more than max_labels"):
        stored.overridden(min_labels=3)


def test_settings_without_the_new_keys_decide_as_before():
    old = Decision.stored([0.05, 0.5, 0.5, 0.5], None, 4)
    assert old.min_labels == 0 and old.max_labels is None and old.calibration is None
    assert old.label_ids(PROBS) == [[0, 1, 3], [0], [0, 2]]
    assert Decision.stored(None, None, 4).thresholds.tolist() == [0.5] * 4
    logits = np.array([[0.3, -2.0]], dtype="float32")
    np.testing.assert_array_equal(Decision.stored(None, None, 2).probabilities(logits), expit(logits))  # as before


def test_stored_settings_round_trip():
    calibration = Calibration("platt", np.array([0.5, 2.0, 1.0, 1.0]), np.array([0.1, -0.3, 0.0, 0.0]))
    decision = Decision(HALF, min_labels=1, max_labels=3, top_k=2, calibration=calibration)
    again = Decision.stored(decision.thresholds.tolist(), decision.settings(), 4)
    assert again.settings() == decision.settings()
    with pytest.raises(ValueError, match="4 positive scales"):
        Decision.stored(None, {"calibration": {"scale": [1.0], "bias": [0.0]}}, 4)


def miscalibrated(num_texts=4000, seed=0, shift=-1.0):
    """Logits of an overconfident model, with a prior shift: the true log-odds are 0.4 * z + shift."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, size=(num_texts, 3))
    targets = rng.random((num_texts, 3)) < 1 / (1 + np.exp(-(0.4 * logits + shift)))
    return logits.astype("float32"), targets.astype("float32")


@pytest.mark.parametrize("method, shift", [("platt", -1.0), ("temperature", 0.0)])
def test_calibration_lowers_ece_and_keeps_labels_with_moved_thresholds(method, shift):
    """Thresholds move with the calibration, so the labels they choose stay; min_labels and max_labels
    rank labels by calibrated probability, which may differ from the raw ranking (not tested here)."""
    logits, targets = miscalibrated(shift=shift)
    calibration, unfitted = fit_calibration(logits, targets, method)
    assert unfitted == []
    raw = Decision(np.array([0.5, 0.3, 0.8], dtype="float32"))
    calibrated = raw.calibrated(calibration)
    before = calibration_error(raw.probabilities(logits), targets)
    after = calibration_error(calibrated.probabilities(logits), targets)
    assert after["ece"] < before["ece"] / 2 and after["brier"] < before["brier"]
    assert calibrated.label_ids(calibrated.probabilities(logits)) == raw.label_ids(raw.probabilities(logits))
    if method == "platt":
        np.testing.assert_allclose(calibration.scale, 0.4, atol=0.05)
        np.testing.assert_allclose(calibration.bias, -1, atol=0.15)
    else:
        np.testing.assert_allclose(calibration.scale, 0.4, atol=0.05)
        np.testing.assert_array_equal(calibration.bias, 0)
    back = calibrated.calibrated(None)
    np.testing.assert_allclose(back.thresholds, raw.thresholds, atol=1e-6)


def test_a_label_without_positives_keeps_scale_one_and_is_reported():
    logits, targets = miscalibrated(500)
    targets[:, 1] = 0
    calibration, unfitted = fit_calibration(logits, targets)
    assert unfitted == [1]
    assert calibration.scale[1] == 1 and calibration.bias[1] == 0 and calibration.scale[0] != 1


def test_calibration_error_by_hand():
    figures = calibration_error(np.array([0.1, 0.1, 0.9, 0.9]), np.array([0, 1, 1, 1]), bins=10)
    # bin of 0.1: mean 0.1, rate 0.5; bin of 0.9: mean 0.9, rate 1.0 -> (2 * 0.4 + 2 * 0.1) / 4
    assert figures["ece"] == pytest.approx(0.25)
    assert figures["brier"] == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    assert [b["count"] for b in figures["reliability"]] == [2, 2]


def test_an_export_meta_without_decision_settings_decides_as_before(tmp_path):
    meta = {"labels": ["a", "b"], "thresholds": [0.3, 0.6]}
    decision = stored_decision(meta, tmp_path / "export_meta.json")
    assert decision.thresholds.tolist() == pytest.approx([0.3, 0.6]) and decision.settings() == {
        "min_labels": 0, "max_labels": None, "top_k": 0, "calibration": None}
    broken = {**meta, "multi_label_decision": {"min_labels": 2, "max_labels": 1}}
    with pytest.raises(DataError, match="export_meta.json: multi_label_decision: min_labels 2 .* max_labels 1"):
        stored_decision(broken, tmp_path / "export_meta.json")


def test_fitting_on_dev_tunes_then_calibrates_and_counts_labels_left_uncalibrated():
    logits, targets = miscalibrated(2000)
    targets[:, 2] = 0
    start = Decision(np.full(3, 0.5, dtype="float32"), min_labels=1)
    decision, results = fit_decision_on_dev(start, logits, targets, ["a", "b", "c"], tune_from=0.5,
                                            calibration_method="platt")
    assert decision.min_labels == 1 and decision.calibration.scale[2] == 1
    assert results["calibration_dev"]["unfitted_labels"] == 1
    assert results["calibration_dev"]["ece_after"] < results["calibration_dev"]["ece_before"]
    tuned = Decision(decision.calibration.raw_thresholds(decision.thresholds).astype("float32"))
    assert tuned.label_ids(tuned.probabilities(logits)) == Decision(decision.thresholds, calibration=decision.calibration
                                                                    ).label_ids(decision.probabilities(logits))
    removed, _ = fit_decision_on_dev(decision, logits, targets, ["a", "b", "c"], calibration_method="none")
    assert removed.calibration is None
    np.testing.assert_allclose(removed.thresholds, tuned.thresholds, atol=1e-6)


def test_a_label_whose_logits_rank_dev_backwards_is_left_uncalibrated_and_keeps_its_labels():
    """The best scale of such a label is not positive; clamping it would flatten its probabilities to a
    constant and the moved threshold would stop choosing anything."""
    logits, targets = miscalibrated(1000)
    logits[:, 0] = -logits[:, 0]
    calibration, unfitted = fit_calibration(logits, targets)
    assert unfitted == [0] and calibration.scale[0] == 1 and calibration.bias[0] == 0
    raw = Decision(np.full(3, 0.5, dtype="float32"))
    calibrated = raw.calibrated(calibration)
    assert calibrated.label_ids(calibrated.probabilities(logits)) == raw.label_ids(raw.probabilities(logits))
