"""Writes the separate trained heads of the nested mini model, for `kiln fuse` tests.

The nested sample (`nested_mini_k3.h5`) is Sequential[mini backbone (pooling='avg'), Dropout, Dense(5)].
Its head, saved on its own as a Keras model taking the 128 pooled features, in every layout:
`head_k3.h5` (Keras 3 legacy), `head.keras`, `head_k2.h5` (tf_keras), plus a hidden-layer head
(`head_hidden_k3.h5`: Dense(16, relu) → Dropout → Dense(5, softmax), seeded) with Keras' outputs of
Sequential[backbone, head_hidden] in `expected/`, and a mismatched head (`head_wrong_k3.h5`, 64 inputs).
Fused bundles must reproduce the nested model's own expected outputs (same weights).

    PY=$(scripts/pyenv) && TF_CPP_MIN_LOG_LEVEL=3 $PY samples/mini/make_heads.py
"""
import os
import numpy as np
import keras

here = os.path.dirname(os.path.abspath(__file__))
p = lambda name: os.path.join(here, name)

nested = keras.models.load_model(p("nested_mini_k3.h5"), compile=False)
dense = nested.layers[-1]
features = nested.layers[0].output_shape[-1] if hasattr(nested.layers[0], "output_shape") else 128

head = keras.Sequential([keras.Input((128,)), keras.layers.Dropout(0.3), keras.layers.Dense(5, activation="softmax", name="dense")], name="head")
head.layers[-1].set_weights(dense.get_weights())
head.save(p("head_k3.h5"))
head.save(p("head.keras"))

import tf_keras
h2 = tf_keras.Sequential([tf_keras.Input((128,)), tf_keras.layers.Dropout(0.3), tf_keras.layers.Dense(5, activation="softmax", name="dense")], name="head")
h2.layers[-1].set_weights(dense.get_weights())
h2.save(p("head_k2.h5"), save_format="h5")

rng = np.random.default_rng(5)
hidden = keras.Sequential([keras.Input((128,)), keras.layers.Dense(16, activation="relu", name="hidden"),
                           keras.layers.Dropout(0.2), keras.layers.Dense(5, activation="softmax", name="classes")], name="head_hidden")
hidden.layers[0].set_weights([rng.normal(0, 0.3, (128, 16)).astype("float32"), rng.normal(0, 0.1, 16).astype("float32")])
hidden.layers[2].set_weights([rng.normal(0, 0.5, (16, 5)).astype("float32"), rng.normal(0, 0.1, 5).astype("float32")])
hidden.save(p("head_hidden_k3.h5"))

wrong = keras.Sequential([keras.Input((64,)), keras.layers.Dense(5, activation="softmax")], name="head_wrong")
wrong.save(p("head_wrong_k3.h5"))

backbone = keras.models.load_model(p("mini_notop_k3.h5"), compile=False)
x = np.load(p("input_64.npy"))
combined = keras.Sequential([backbone, hidden])
np.save(p("expected/head_hidden.input_64.npy"), combined.predict(x, verbose=0).astype("float32"))
# The same model on raw pixels through Keras' own preprocess_input (for --preprocess caffe).
raw = np.round(x[..., ::-1] + np.array([123.68, 116.779, 103.939], dtype="float32")).astype("float32")
np.save(p("raw_64.npy"), raw)
np.save(p("expected/nested_mini_k3.raw_64.npy"), nested.predict(keras.applications.resnet50.preprocess_input(raw.copy()), verbose=0).astype("float32"))
print("heads written; raw pixel range", raw.min(), raw.max())
