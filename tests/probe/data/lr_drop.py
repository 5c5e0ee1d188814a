"""A real LR-drop jump (MECHANISMS.md, lr_schedule): an MLP on sklearn's digits with 20% of the training labels
replaced at random, SGD + momentum 0.9 at LR 0.2 — the validation accuracy swings around 0.85-0.9 — and a
LearningRateScheduler dividing the LR by 10 at epoch 8, which lifts it to ~0.95 at once. Seeded, so that a branch
from its checkpoints trains on the same data."""

import numpy as np
from sklearn.datasets import load_digits
from tensorflow import keras

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x, y = load_digits(return_X_y=True)
order = rng.permutation(len(x))
x, y = (x[order] / 16).astype("float32"), y[order]
n = 1300
y_train = np.where(rng.random(n) < 0.2, rng.integers(0, 10, n), y[:n])

model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                          keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.2, momentum=0.9),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
drop = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.2 if epoch < 8 else 0.02)
model.fit(x[:n], y_train, epochs=18, batch_size=32, validation_data=(x[n:], y[n:]), callbacks=[drop], verbose=0)
