"""Defaults shared by the library and the command line, in one place."""

#: Samples calibration uses unless told otherwise (`calibration_samples`,
#: `--calibrate-samples`).
CALIBRATION_SAMPLES = 256

#: Samples per batch when samples stream through a model (calibration, evaluation).
BATCH_SIZE = 64

#: Samples per optimizer step when a converted model is trained (distillation).
TRAINING_BATCH_SIZE = 32
