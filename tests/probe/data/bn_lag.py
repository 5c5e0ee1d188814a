"""BatchNorm running statistics that lag the weights (MECHANISMS.md, batchnorm_statistics): digits pixels 0-16 shifted
by +20 (unnormalised inputs), Keras' default BN momentum 0.99 (= torch 0.01), SGD at LR 0.05 — the eval-mode
validation accuracy swings from epoch to epoch while the weights are fine; recomputing the statistics with the weights
frozen (PreciseBN) removes the swings."""

import numpy as np
from sklearn.datasets import load_digits
from tensorflow import keras

keras.utils.set_random_seed(0)
x, y = load_digits(return_X_y=True)
order = np.random.default_rng(0).permutation(len(x))
x, y = (x[order] + 20.0).astype("float32"), y[order]
n = 1300
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128), keras.layers.BatchNormalization(),
                          keras.layers.ReLU(), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
model.fit(x[:n], y[:n], epochs=12, batch_size=32, validation_data=(x[n:], y[n:]), verbose=0)
