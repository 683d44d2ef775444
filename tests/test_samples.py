"""Sample handling: which evaluation samples were calibration samples too."""

import numpy as np

from normswap.samples import samples_in_common


def test_samples_in_common_counts_value_equal_samples_across_batches_and_inputs():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(10, 4, 4, 3)).astype("float32")
    extras = rng.normal(size=(10, 5)).astype("float32")
    calibration = [[images[:6], extras[:6]], [images[6:8], extras[6:8]]]  # samples 0-7
    changed = extras[7:10].copy()
    changed[0, 2] += 1e-6  # sample 7: same image, another second input
    evaluation = [[images[5:7], extras[5:7]], [images[7:10], changed]]  # samples 5-9
    assert samples_in_common(calibration, evaluation) == 2  # 5 and 6; not 7, 8 or 9
    assert samples_in_common(calibration, calibration) == 8
    assert samples_in_common(evaluation, calibration) == 2
    copies = [[images[5:6].copy(), extras[5:6].copy()]] * 3  # each copy counts
    assert samples_in_common(calibration, copies) == 3
    assert samples_in_common([[images[:3]]], [[images[3:]]]) == 0


def test_labelled_batches_give_their_inputs_as_keras_fit_takes_them():
    import keras
    import pytest
    import tensorflow as tf

    import normswap
    from normswap.samples import input_batches

    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 3)).astype("float32")
    labels, weights = rng.integers(0, 2, size=10), rng.random(10)
    one = keras.Model(i := keras.Input((3,)), keras.layers.Dense(2)(i))
    for data in [(x, labels), (x, labels, weights), [x, labels], (x, labels, None),
                 (x, [labels, weights]), (x, {"head": labels}),
                 tf.data.Dataset.from_tensor_slices((x, labels)).batch(4),
                 tf.data.Dataset.from_tensor_slices((x, (labels, weights))).batch(4)]:
        [got] = [np.concatenate([b[0] for b in input_batches(one, data)])]
        np.testing.assert_array_equal(got, x)
    a, b = keras.Input((3,)), keras.Input((2,))
    two = keras.Model([a, b], keras.layers.Concatenate()([a, b]))
    second = rng.normal(size=(10, 2)).astype("float32")
    for data in [(x, second), ((x, second), labels), ([x, second], labels, weights),
                 ((x, second), {"out": labels}), ((x, second), [labels, weights], None),
                 tf.data.Dataset.from_tensor_slices(((x, second), labels)).batch(10)]:
        [[first, other]] = input_batches(two, data, batch_size=10)
        np.testing.assert_array_equal(first, x)
        np.testing.assert_array_equal(other, second)
    three = keras.Model([a, b, c := keras.Input((1,))],
                        keras.layers.Concatenate()([a, b, c]))
    with pytest.raises(normswap.UsageError, match="a batch has 2 array"):
        input_batches(three, ((x, second), labels))
    batches = input_batches(two, [(x[:4], second[:4]), (x[4:], second[4:])])  # two batches
    assert [len(b[0]) for b in batches] == [4, 6]
    with pytest.raises(normswap.UsageError, match=r"has 1 input\(s\)\.$"):
        input_batches(one, (labels.astype("float32")[:, None], labels))  # no x: refused
    # Two arrays shaped like the input: two batches, or an autoencoder's (x, x)? Neither
    # is guessed (a second batch must not be dropped as labels): refused, with the way out.
    with pytest.raises(normswap.UsageError, match=r"a batch has 2 array\(s\) but the model "
                       r"has 1 input\(s\) \(labelled data whose labels are shaped like"):
        input_batches(one, [x[:5], x[5:]])
