"""The Keras running-average artifact: epoch 1's training accuracy is a mean over an epoch of fast learning.

MECHANISMS.md, running_average: Keras reports the training metric as the mean over the epoch's batches while the
model changes; in the first epoch the model goes from chance to ~0.9, so the reported training accuracy sits far
below the validation accuracy measured at the epoch's end, and "jumps" at epoch 2. A plain Keras script, run
through ``whyspike run``'s machinery with the detailed tier, which also evaluates the training set with the
epoch-end weights (``train_eval_accuracy``): the same model, measured the same way as validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._base import Scenario
from ._keras import run_keras_script

SCRIPT = '''\
import numpy as np
import keras

rng = np.random.default_rng(0)
centers = rng.normal(size=(10, 20)) * 1.2


def draw(n):
    y = rng.integers(0, 10, n)
    return centers[y] + rng.normal(size=(n, 20)), y


x_train, y_train = draw(3000)
x_val, y_val = draw(1000)
model = keras.Sequential([
    keras.Input((20,)),
    keras.layers.Dense(64, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=EPOCHS, batch_size=32, verbose=0)
'''


@dataclass(frozen=True)
class Config:
    seed: int = 0
    epochs: int = 10


def train(cfg: Config, run_dir: Path) -> None:
    run_keras_script(SCRIPT.replace("EPOCHS", str(cfg.epochs)), "running_average.py", run_dir, seed=cfg.seed,
                     tier="detailed")


SCENARIO = Scenario(
    name="keras-running-average",
    description="Keras' epoch-1 training accuracy is a running mean: far below validation, then a 'jump'",
    truth="running_average_metric",
    truth_is_finding=True,
    metric="accuracy",
    framework="keras",
    train=train,
    sizes={"full": Config(epochs=20), "ci": Config(epochs=6)},
    why=("Keras averages the training accuracy over the epoch's batches; in epoch 1 the model goes from chance to "
         "~0.9 within the epoch, so the average is far below what the model reaches at its end. Validation is "
         "measured at the end, and so is the detailed tier's train_eval_accuracy: both are high from epoch 1."),
    tags=("zero-retrain",),
)
