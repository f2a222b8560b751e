"""The closed-form behaviour readout of the predicted state (``model.behaviour_readout="state"``)."""

import numpy as np
import pytest

from mesojax import metrics, readout


@pytest.mark.parametrize("frac", [0.5, 0.1, 0.03])
def test_balanced_threshold_separates_a_rare_class(frac):
    rng = np.random.default_rng(0)
    label = (rng.random(400) < frac).astype(float)
    label[:2] = (0, 1)
    score = 0.2 * label + 0.01 * rng.normal(size=400)  # separable, but far below the 0.5 cut
    tau = readout.balanced_threshold(score, label)
    assert metrics.balanced_accuracy(label.astype(int), (score >= tau).astype(int)) == 1.0
    assert metrics.balanced_accuracy(label.astype(int), (score >= 0.5).astype(int)) == 0.5


def test_balanced_threshold_of_one_class_or_missing_labels():
    assert readout.balanced_threshold(np.arange(5.0), np.zeros(5)) == 0.5
    label = np.array([0, 1, np.nan, 0, 1])
    score = np.array([0.0, 1.0, 50.0, 0.1, 0.9])
    assert 0.1 < readout.balanced_threshold(score, label) < 0.9


def test_fit_reads_each_group_from_its_own_neurons():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6))
    y = np.stack([x[:, 0] - 2 * x[:, 1], x[:, 4] + 0.5 * x[:, 5]], 1) + 0.01 * rng.normal(size=(300, 2))
    now = x + 0.1 * rng.normal(size=x.shape)  # the forecast x̂ differs from the current state
    ro = readout.fit(x, now, y, columns=[np.arange(3), np.arange(3, 6)], targets=[np.array([0]), np.array([1])])
    pred = readout.predict(ro, x, now)
    assert metrics.r2_score(y, pred) > 0.99  # read through x[t] + (x̂ - x[t])
    # Target 0 reads neurons 0-2 only: moving neurons 3-5 leaves it unchanged.
    moved, moved_now = x.copy(), now.copy()
    moved[:, 3:] += 10.0
    moved_now[:, 3:] -= 10.0
    np.testing.assert_allclose(readout.predict(ro, moved, moved_now)[:, 0], pred[:, 0])
    assert np.isnan(readout.predict_labels(ro, x, now)).all()  # no 0/1 target
    with pytest.raises(ValueError, match="without modes"):
        readout.predict_modes(ro, x, now)


def test_features_are_the_state_and_its_predicted_change():
    x_hat, now = np.array([[1.0, 2.0]]), np.array([[0.5, 3.0]])
    np.testing.assert_array_equal(readout.features(x_hat, now), [[0.5, 3.0, 0.5, -1.0]])


def test_binary_target_labels_and_modes():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 4))
    rev = (x[:, 0] + 0.3 * rng.normal(size=500) > 1.2).astype(float)  # rare reversals
    beh = np.stack([rev, x[:, 1]], 1)
    z = (beh - beh.mean(0)) / beh.std(0)
    modes = (x[:, 2] > 0).astype(int)
    ro = readout.fit(x, x, z, columns=[np.arange(4)], targets=[np.arange(2)], binary=np.array([True, False]),
                     modes=modes, binary_truth=beh)
    labels = readout.predict_labels(ro, x, x)
    assert np.isnan(labels[:, 1]).all()
    assert metrics.balanced_accuracy(rev.astype(int), labels[:, 0].astype(int)) > 0.85
    assert metrics.accuracy(modes, readout.predict_modes(ro, x, x)) > 0.9


def test_the_forecast_correction_is_kept_only_where_it_helps():
    rng = np.random.default_rng(3)
    now = rng.normal(size=(600, 5))
    change = rng.normal(size=(600, 5))
    y = np.stack([now[:, 0] + change[:, 1],  # the predicted change carries information
                  now[:, 2] + 0.1 * rng.normal(size=600)], 1)  # it does not
    ro = readout.fit(now + change, now, y, columns=[np.arange(5)], targets=[np.arange(2)])
    (group,) = ro.groups
    assert group.keep.tolist() == [True, False]
    pred = readout.predict(ro, now + change, now)
    assert metrics.r2_score(y[:, 0], pred[:, 0]) > 0.99
    # Where it is dropped the readout is exactly the decoder of x[t].
    dec = metrics.linear_decoder(now, y)
    np.testing.assert_allclose(pred[:, 1], metrics.decode(dec, now)[:, 1])
