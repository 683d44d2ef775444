"""Fitting a converted model to the original on unlabelled samples.

- `lockstep.py`: both models replayed side by side, call by call, in one pass;
- `hooks.py`: the protocol by which a target tells calibration what to fit;
- `calibrate.py`: the closed-form per-channel affine fit at every swapped site;
- `affine_fit.py`: that fit's streaming sums; `closed_form.py`: the same sums for
  per-sample normalizations from per-(sample, channel) moments, without running the layer;
- `distill.py`: end-to-end fine-tuning of the new model towards the original's outputs.
"""
