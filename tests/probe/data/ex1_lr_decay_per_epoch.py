import tensorflow as tf
from tensorflow import keras

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
    decay_steps=10 * 32,  # 10 x steps_per_epoch (1000 samples, batch 32): per-10-epoch decay, as the article meant
    decay_rate=0.5,
    staircase=True
)

optimizer = keras.optimizers.Adam(learning_rate=lr_schedule)
model.compile(optimizer=optimizer, loss='categorical_crossentropy', metrics=['accuracy'])

# Generate some sample data (replace with real data)
import numpy as np
X_train = np.random.rand(1000, 10)
y_train = np.random.randint(0, 10, 1000)
y_train = keras.utils.to_categorical(y_train, num_classes=10)

# Training the model
history = model.fit(X_train, y_train, epochs=30, batch_size=32, verbose=0)

# Example of identifying spike using the training history
import matplotlib.pyplot as plt
plt.plot(history.history['accuracy'])
plt.xlabel('Epochs')
plt.ylabel('Training Accuracy')
plt.title('Accuracy vs. Epochs')
plt.show()

