"""Peer references for `kiln train-head` (issue 9), run by scripts/fixtures-train (cached) and by the tests.

    make_train_fixtures.py make --out DIR      features, split, Keras' and scikit-learn's validation accuracies
    make_train_fixtures.py predict HEAD.h5 FEATURES.npz OUT.npy
                                               keras.models.load_model(HEAD.h5) on FEATURES' rows -> OUT.npy

`make` writes, for two feature sets of all 1,797 scikit-learn digits (10 classes):
- mini.npz: the committed mini ResNet-50 backbone's avg_pool features (samples/mini/mini_notop_k3.h5, computed
  by Keras), images upscaled to 64x64 RGB by 8x nearest and preprocessed with resnet50.preprocess_input (caffe),
  then standardized per feature with the training rows' mean and standard deviation (the raw features of this
  random-weight backbone span 0-280; on them neither Adam run converges in 60 epochs, so the comparison with
  scikit-learn's optimum would measure convergence, not the trainer)
- pixels.npz: the 8x8 pixels / 16 (64 features)
(and mini_raw.npy: the mini features before standardizing, row i = load_digits() image i, the <index> in
samples/digits' file names), each with features, labels, class_names and a stratified split (sklearn train_test_split, 20 % validation,
random_state 0) in the npz layout `kiln train-head` reads; and results.json: per set, the settings
(SETTINGS_BY_SET) and the validation accuracy of
- Keras: Sequential[Input, Dense(10, softmax, kernel_regularizer=l2(L2))], Adam(LR), batch B, E epochs,
  sparse categorical cross-entropy, the weights of the epoch with the lowest validation loss kept;
- scikit-learn: LogisticRegression (multinomial, lbfgs) with C = 1 / (2 * L2 * n_train), the same objective
  (mean cross-entropy + L2 * sum(w^2) equals (C * sum(ce) + 0.5 * sum(w^2)) / (C * n_train)).
Python is used only here, for reference numbers; kiln itself never needs it.
"""
import json
import os
import sys

import numpy as np

# Per feature set: the raw pixels take a larger step; the (standardized) mini features a larger L2.
SETTINGS_BY_SET = {"pixels": {"epochs": 60, "batch": 32, "lr": 0.01, "l2": 0.001, "seed": 0},
                   "mini": {"epochs": 60, "batch": 32, "lr": 0.001, "l2": 0.01, "seed": 0}}
SETTINGS = dict(SETTINGS_BY_SET["pixels"])
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
HERE = os.path.dirname(os.path.abspath(__file__))


def save_npz(path, features, labels, split):
    np.savez(path, features=features.astype("<f4"), labels=labels.astype("<i8"),
             class_names=np.array(NAMES), split=split.astype("<i8"))


def keras_head(x, y, split, classes):
    import keras
    keras.utils.set_random_seed(SETTINGS["seed"])
    tr, va = split == 0, split == 1
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(
        classes, activation="softmax", kernel_regularizer=keras.regularizers.l2(SETTINGS["l2"]))])
    model.compile(optimizer=keras.optimizers.Adam(SETTINGS["lr"]), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    class KeepBest(keras.callbacks.Callback):
        best, weights = np.inf, None

        def on_epoch_end(self, epoch, logs=None):
            if logs["val_loss"] < self.best:
                self.best, self.weights = logs["val_loss"], self.model.get_weights()

    keep = KeepBest()
    model.fit(x[tr], y[tr], epochs=SETTINGS["epochs"], batch_size=SETTINGS["batch"], validation_data=(x[va], y[va]),
              shuffle=True, verbose=0, callbacks=[keep])
    model.set_weights(keep.weights)
    p = model.predict(x[va], verbose=0)
    return float((p.argmax(1) == y[va]).mean()), float(keep.best)


def sklearn_head(x, y, split):
    from sklearn.linear_model import LogisticRegression
    tr, va = split == 0, split == 1
    c = 1.0 / (2 * SETTINGS["l2"] * tr.sum())
    clf = LogisticRegression(C=c, max_iter=20000, tol=1e-8).fit(x[tr], y[tr])
    return float(clf.score(x[va], y[va]))


def make(out):
    import keras
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    y = digits.target.astype(np.int64)
    idx = np.arange(len(y))
    _, val = train_test_split(idx, test_size=0.2, stratify=y, random_state=0)
    split = np.zeros(len(y), np.int64)
    split[val] = 1

    grey = np.round(digits.data.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.float32)
    big = np.kron(grey, np.ones((8, 8), np.float32))  # 64x64, nearest
    rgb = np.repeat(big[..., None], 3, axis=-1)
    backbone = keras.models.load_model(os.path.join(HERE, "..", "samples", "mini", "mini_notop_k3.h5"), compile=False)
    mini = backbone.predict(keras.applications.resnet50.preprocess_input(rgb.copy()), batch_size=64, verbose=0)
    np.save(os.path.join(out, "mini_raw.npy"), mini.astype("<f4"))  # Keras' own features, for kiln features' parity
    tr = split == 0
    mini = ((mini - mini[tr].mean(0)) / (mini[tr].std(0) + 1e-6)).astype(np.float32)
    pixels = (digits.data / 16.0).astype(np.float32)

    results = {"sets": {}}
    for name, x in (("mini", mini), ("pixels", pixels)):
        SETTINGS.clear()
        SETTINGS.update(SETTINGS_BY_SET[name])
        save_npz(os.path.join(out, f"{name}.npz"), x, y, split)
        kacc, kloss = keras_head(x, y, split, 10)
        sacc = sklearn_head(x, y, split)
        results["sets"][name] = {"settings": dict(SETTINGS), "keras_val_accuracy": kacc, "keras_best_val_loss": kloss, "sklearn_val_accuracy": sacc,
                                 "rows": int(len(y)), "validation_rows": int(split.sum()), "features": int(x.shape[1])}
        print(f"{name}: keras {kacc:.4f} (val_loss {kloss:.4f}), sklearn {sacc:.4f}", file=sys.stderr)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


def predict(head, features, out):
    import keras
    model = keras.models.load_model(head)
    x = np.load(features)["features"]
    np.save(out, model.predict(x, verbose=0).astype(np.float32))


if __name__ == "__main__":
    if sys.argv[1] == "make" and sys.argv[2] == "--out":
        make(sys.argv[3])
    elif sys.argv[1] == "predict":
        predict(*sys.argv[2:5])
    else:
        sys.exit(__doc__)
