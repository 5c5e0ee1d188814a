"""Regenerate the seed article's Example 1 fixture (ex1_lr_decay.py, Keras LR-decay bug).

Source program: /work/shared/seed/examples/ex1_lr_decay.py. Run verbatim (same model,
data generation, optimizer, ExponentialDecay(0.01, decay_steps=10, decay_rate=0.5,
staircase=True), epochs=30, batch_size=32) with these deviations only:
  * Keras 3 on the torch backend: `import keras` instead of `from tensorflow import keras`
    (no `import tensorflow`), KERAS_BACKEND=torch.
  * Seeds: keras.utils.set_random_seed(0) at the top (before the model is built, so weight
    init is fixed) and np.random.seed(0) immediately before data generation;
    torch.set_num_threads(1).
  * matplotlib plotting dropped.
  * Two callbacks: LogLR (writes the LR the optimizer will use next, i.e. the schedule
    evaluated at optimizer.iterations, into logs["learning_rate"] at each epoch end),
    then keras.callbacks.CSVLogger. LogLR must come first so the CSV sees the column.

The bug: decay_steps counts optimizer steps, not epochs. 1000 samples / batch 32 = 32
steps per epoch, so after epoch e the LR is 0.01 * 0.5**floor(32*(e+1)/10):
1.25e-3 after epoch 0, ~1e-31 after epoch 29; training stalls after ~2 epochs.

Regenerate (scratch venv, NOT the project venv):
    python3 -m venv /tmp/kenv
    /tmp/kenv/bin/pip install torch==2.13.0 keras     # torch 2.13.0+cpu wheel
    cd /work/main/tests/data/seed && KERAS_BACKEND=torch /tmp/kenv/bin/python make_ex1.py

Writes ex1_lr_decay.csv (CSVLogger: epoch, accuracy, learning_rate, loss) and
ex1_history.json (json.dump(history.history)) next to this script.

Generated with: Python 3.11.7, keras 3.15.1, torch 2.13.0+cpu, numpy 2.4.6.
Final train accuracy (epoch 29): 0.136 (0.13600000739097595); flat at 0.136 from epoch 3 on,
loss flat at ~2.2842. The CSV also has val_accuracy, val_learning_rate, val_loss columns
filled with "NA": Keras 3 CSVLogger adds val_* columns when fit has no validation data.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import json

import torch

torch.set_num_threads(1)

import keras

keras.utils.set_random_seed(0)

HERE = os.path.dirname(os.path.abspath(__file__))


class LogLR(keras.callbacks.Callback):
    """Put the LR the optimizer will use for its next step into logs['learning_rate']."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        opt = self.model.optimizer
        lr = opt._learning_rate  # the schedule object
        if callable(lr):
            lr = lr(opt.iterations)
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))


# Simplified model definition (for demonstration)
model = keras.Sequential([
    keras.layers.Dense(128, activation='relu', input_shape=(10,)),
    keras.layers.Dense(10, activation='softmax')
])

# Initial learning rate
initial_learning_rate = 0.01

# Step decay schedule (drops by factor of 0.5 every 10 epochs)
lr_schedule = keras.optimizers.schedules.ExponentialDecay(
    initial_learning_rate,
    decay_steps=10,
    decay_rate=0.5,
    staircase=True
)

optimizer = keras.optimizers.Adam(learning_rate=lr_schedule)
model.compile(optimizer=optimizer, loss='categorical_crossentropy', metrics=['accuracy'])

# Generate some sample data (replace with real data)
import numpy as np
np.random.seed(0)
X_train = np.random.rand(1000, 10)
y_train = np.random.randint(0, 10, 1000)
y_train = keras.utils.to_categorical(y_train, num_classes=10)

# Training the model
history = model.fit(
    X_train, y_train, epochs=30, batch_size=32, verbose=0,
    callbacks=[LogLR(), keras.callbacks.CSVLogger(os.path.join(HERE, "ex1_lr_decay.csv"))],
)

with open(os.path.join(HERE, "ex1_history.json"), "w") as f:
    json.dump(history.history, f)

print("keras", keras.__version__, "torch", torch.__version__, "numpy", np.__version__)
print("final accuracy", history.history["accuracy"][-1])
