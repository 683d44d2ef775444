"""Validation of the constructor arguments the bundled layers share.

Each check returns the argument in its canonical type, or raises a ValueError that names
the layer and quotes what was received (Keras's convention: "... Received: epsilon=0").
`check_axis` lives with the rest of the axis bookkeeping, in `_axes`.
"""

import math
import numbers

import keras


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_epsilon(epsilon, layer_name, name="epsilon", allow_zero=False, hint=""):
    """ε as a float: positive, or non-negative with `allow_zero` (e.g. FRN with a learned ε).

    ε keeps 1/√(statistic + ε) finite for an all-constant channel, so 0 is only valid
    where something else is added to it. `hint` is appended to the error message: say
    there what to do instead.
    """
    valid = _is_real(epsilon) and math.isfinite(epsilon) and (
        epsilon >= 0 if allow_zero else epsilon > 0)
    if not valid:
        requirement = "a non-negative" if allow_zero else "a positive"
        raise ValueError(
            f"{layer_name}: `{name}` must be {requirement} number (it keeps "
            f"1/√(statistic + ε) finite).{hint} Received: {name}={epsilon!r}"
        )
    return float(epsilon)


def check_momentum(momentum, layer_name, name="momentum"):
    """A moving-average momentum (the weight the average keeps at each step) in [0, 1]."""
    if not (_is_real(momentum) and 0.0 <= momentum <= 1.0):
        raise ValueError(
            f"{layer_name}: `{name}` must be between 0 and 1 (the weight kept by the "
            f"moving average at each step, e.g. 0.99). Received: {name}={momentum!r}"
        )
    return float(momentum)


def check_flag(value, layer_name, name):
    """A boolean argument: True or False (1 and 0 pass, as they compare equal)."""
    if value not in (True, False):
        raise ValueError(
            f"{layer_name}: `{name}` must be True or False. Received: {name}={value!r}"
        )
    return bool(value)


def check_count(value, layer_name, name, minimum=0, meaning=""):
    """An integer argument ≥ `minimum` (a step count, a number of groups, ...)."""
    if (isinstance(value, bool) or not _is_real(value) or int(value) != value
            or value < minimum):
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer ≥ {minimum}")
        raise ValueError(
            f"{layer_name}: `{name}` must be {kind}{meaning}. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_synchronized(synchronized, layer_name):
    """Refuse `synchronized=True` where it cannot work (any backend but TensorFlow)."""
    synchronized = check_flag(synchronized, layer_name, "synchronized")
    if synchronized and keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"{layer_name}: synchronized=True (batch statistics all-reduced across the "
            "replicas of a tf.distribute strategy) is only supported with the TensorFlow "
            f"backend; the current backend is {keras.backend.backend()!r}. Use "
            "synchronized=False, or set KERAS_BACKEND=tensorflow."
        )
    return synchronized
