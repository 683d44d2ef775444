"""Distillation: fine-tune the converted model to reproduce the original's outputs.

The original model is the teacher: its outputs on the unlabelled samples are computed once
(inference mode) and never change, and it is never trained. The converted model (the
student) is trained for a fixed number of steps to match them: KL divergence where an
output is a probability distribution (rows of non-negative numbers summing to 1, e.g. a
softmax), mean squared error otherwise. Defaults: Adam, learning rate 1e-4 decaying to 0
along a cosine over the steps, batches of 32 samples drawn with a fixed seed.

The student is trained through a wrapper model that shares its layers, so the returned
student is not left compiled with an optimizer attached (its saved file stays small). The
objective is the teacher's outputs alone: the student's own regularization losses (a
`kernel_regularizer`, `add_loss` terms) are left out. They belong to the task it was
trained on, and a conversion can change what they measure: folding a BN into a conv
scales the kernel its L2 penalty weighs.
"""

import keras
import numpy as np

from normswap.defaults import TRAINING_BATCH_SIZE
from normswap.samples import concatenated
from normswap.verify import outputs_of

DEFAULT_LEARNING_RATE = 1e-4


def _is_distribution(output):
    return (output.ndim == 2 and output.shape[1] > 1 and np.all(output >= 0)
            and np.allclose(output.sum(axis=1), 1.0, atol=1e-3))


class _Progress(keras.callbacks.Callback):
    """A rich progress bar on stderr, advanced once per training step."""

    def __init__(self, steps):
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("distilling"), BarColumn(),
                            TextColumn("{task.completed}/{task.total} loss {task.fields[loss]}"),
                            TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.task = self.bar.add_task("distill", total=steps, loss="-")

    def on_train_begin(self, logs=None):
        self.bar.start()

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(self.task, advance=1, loss=f"{(logs or {}).get('loss', 0):.4g}")

    def on_train_end(self, logs=None):
        self.bar.stop()


def distill(teacher, student, batches, steps, *, learning_rate=DEFAULT_LEARNING_RATE,
            batch_size=TRAINING_BATCH_SIZE, seed=0, progress=False, site_pairs=()):
    """Train `student` for `steps` steps to match `teacher` on the samples in `batches`.

    `site_pairs`: (teacher tensor, student tensor) pairs of the two graphs, e.g. a BN's
    output and its replacement's, matched too (mean squared error, each weighted by the
    inverse of its target's variance and shared equally between the sites), so that the
    swapped layers stay close to what they replace, not only the model's outputs.
    Returns a summary: steps, losses at the first and last step, the loss kinds used.
    """
    inputs = concatenated(batches)
    targets = outputs_of(teacher, batches)
    kinds = ["kl_divergence" if _is_distribution(t) else "mean_squared_error" for t in targets]
    losses = [keras.losses.KLDivergence() if k == "kl_divergence" else
              keras.losses.MeanSquaredError() for k in kinds]
    weights = [1.0] * len(losses)
    site_teacher = None
    if site_pairs:
        site_teacher = keras.Model(teacher.inputs, [t for t, _ in site_pairs])
        first = keras.tree.flatten(site_teacher([a[:batch_size] for a in inputs]))
        weights += [1.0 / (len(site_pairs) * max(float(np.var(np.asarray(t))), 1e-12))
                    for t in first]
        losses += [keras.losses.MeanSquaredError() for _ in site_pairs]
    trainer = _Trainer(student.inputs, student.outputs + [s for _, s in site_pairs],
                       name=f"{student.name}_distill")
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    trainer.compile(optimizer=keras.optimizers.Adam(schedule),
                    loss=losses if len(losses) > 1 else losses[0],
                    loss_weights=weights if len(weights) > 1 else None)
    rng = np.random.default_rng(seed)
    count = len(inputs[0])

    def sample_batches():
        while True:
            rows = rng.choice(count, size=min(batch_size, count), replace=False)
            x = [a[rows] for a in inputs]
            y = [t[rows].astype(np.float32) for t in targets]
            if site_teacher is not None:
                y += [np.asarray(keras.ops.convert_to_numpy(t), np.float32)
                      for t in keras.tree.flatten(site_teacher(x, training=False))]
            yield (tuple(x) if len(x) > 1 else x[0]), (tuple(y) if len(y) > 1 else y[0])

    losses_seen = _Losses()
    callbacks = [losses_seen] + ([_Progress(steps)] if progress else [])
    trainer.fit(sample_batches(), steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False,
                callbacks=callbacks)
    return {"steps": int(steps), "loss_kinds": kinds, "learning_rate": learning_rate,
            "batch_size": min(batch_size, count), "sites_matched": len(site_pairs),
            "first_loss": losses_seen.first, "last_loss": losses_seen.last}


class _Trainer(keras.Model):
    """The student's graph as a model to train, without the student's own losses."""

    @property
    def losses(self):
        return []


class _Losses(keras.callbacks.Callback):
    """The training loss after the first step and the running loss after the last one."""

    first = last = None

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", np.nan))
        if self.first is None:
            self.first = loss
        self.last = loss
