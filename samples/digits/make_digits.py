"""Writes the committed digits sample: scikit-learn's bundled handwritten digits (8x8, 16 grey levels),
upscaled 4x (nearest) to 32x32 and saved as greyscale PNG, one folder per class, deliberately imbalanced.

    PY=$(scripts/pyenv) && $PY samples/digits/make_digits.py

- train/<class>/<index>.png: the first N images of each class in the dataset's order, N from COUNTS below
  (60 for "zero" down to 12 for "nine": the imbalance the class histogram shows)
- heldout/<class>_<index>.png: the next 2 images of each class, never used for training (the demo classifies them)

Deterministic: the same files byte for byte on every run. Needs numpy, scikit-learn and Pillow (pinned env).
"""
import os
import shutil

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COUNTS = [60, 48, 40, 34, 28, 24, 20, 16, 14, 12]
HELDOUT = 2

here = os.path.dirname(os.path.abspath(__file__))


def picture(values):
    """8x8 of 0..16 -> 32x32 uint8 (0..255), bright strokes on black."""
    grey = np.round(values.reshape(8, 8) * (255.0 / 16.0)).astype(np.uint8)
    return np.kron(grey, np.ones((4, 4), dtype=np.uint8))


def main():
    digits = load_digits()
    for sub in ("train", "heldout"):
        shutil.rmtree(os.path.join(here, sub), ignore_errors=True)
    for label, name in enumerate(NAMES):
        idx = np.flatnonzero(digits.target == label)
        train, held = idx[:COUNTS[label]], idx[COUNTS[label]:COUNTS[label] + HELDOUT]
        folder = os.path.join(here, "train", name)
        os.makedirs(folder, exist_ok=True)
        for i in train:
            Image.fromarray(picture(digits.data[i]), mode="L").save(os.path.join(folder, f"{i:04d}.png"), optimize=True)
        os.makedirs(os.path.join(here, "heldout"), exist_ok=True)
        for i in held:
            Image.fromarray(picture(digits.data[i]), mode="L").save(os.path.join(here, "heldout", f"{name}_{i:04d}.png"), optimize=True)
    print("digits written:", sum(COUNTS), "training images,", HELDOUT * len(NAMES), "held back")


if __name__ == "__main__":
    main()
