"""The teaching notebook as written, on Keras 3 + TensorFlow CPU: the reference digitnet is timed against.

    .venv/bin/pip install 'digitnet[bench]'        # tensorflow-cpu and keras
    .venv/bin/python benchmarks/keras_notebook.py  # prints one JSON line (bench.py runs it for you)

The model, compile() and fit() lines are the notebook's, unchanged: raw 0-255 pixels (the notebook
never scales them), 3 epochs at batch 32, the test set as validation_data. The only change is where
MNIST comes from: digitnet's verified IDX files instead of keras.datasets' download (same bytes).
A callback splits each epoch into training and validation time. Then predict() is timed.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from common import emit, infer_result, limit, mnist, train_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="first N train and test images (0: all)")
    parser.add_argument("--scale", action="store_true", help="divide pixels by 255 (not the notebook)")
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--no-infer", action="store_true")
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    from keras.layers import Conv2D, Dense, Flatten, MaxPooling2D
    from keras.models import Sequential

    x_train, y_train, x_test, y_test = limit(mnist(), args.limit)
    if args.scale:
        x_train, x_test = x_train / 255.0, x_test / 255.0

    # The notebook, cell for cell.
    model = Sequential()
    model.add(Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)))
    model.add(MaxPooling2D((2, 2)))
    model.add(Conv2D(64, (3, 3), activation='relu'))
    model.add(MaxPooling2D((2, 2)))
    model.add(Conv2D(128, (3, 3), activation='relu'))
    model.add(Flatten())
    model.add(Dense(128, activation='relu'))
    model.add(Dense(10, activation='softmax'))
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])

    class Clock(keras.callbacks.Callback):
        """Epoch start, start of validation, epoch end: training time excludes validation."""

        def __init__(self):
            super().__init__()
            self.fit_start, self.train_s, self.end_wall, self.acc = 0.0, [], [], []

        def on_train_begin(self, logs=None):
            self.fit_start = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_test_begin(self, logs=None):
            self.train_s.append(time.perf_counter() - self.t0)

        def on_epoch_end(self, epoch, logs=None):
            self.end_wall.append(time.perf_counter() - self.fit_start)
            self.acc.append(float(logs["val_accuracy"]))

    clock = Clock()
    t0 = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, validation_data=(x_test, y_test),
              verbose=0, callbacks=[clock])
    fit_seconds = time.perf_counter() - t0
    result = {"train": train_result(
        "keras-notebook" + ("-scaled" if args.scale else ""), len(x_train), clock.train_s,
        clock.end_wall, clock.acc, fit_seconds, batch_size=32, pixels="0-1" if args.scale else "raw 0-255",
        versions={"tensorflow": tf.__version__, "keras": keras.__version__},
        threads={"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                 "inter_op": tf.config.threading.get_inter_op_parallelism_threads()})}

    if not args.no_infer:
        x = x_test if not args.scale else x_test.astype("float32")
        xf = x_test.astype("float32") / (255.0 if args.scale else 1.0)  # model(x) does not cast uint8
        result["infer"] = [
            infer_result("keras predict", lambda b: model.predict(b, batch_size=len(b), verbose=0),
                         x, calls=args.latency_calls, y=y_test),
            # predict() builds a data pipeline per call; calling the model directly is the fast path
            # Keras documents for small inputs, so single-image latency is shown both ways.
            infer_result("keras model(x)", lambda b: model(b, training=False).numpy(), xf,
                         batches=(1, 256), calls=args.latency_calls),
        ]
    emit(result)


if __name__ == "__main__":
    main()
