"""scikit-learn's real 8x8 handwritten digits (1,797 images, 10 classes), shipped with the package."""
from __future__ import annotations

import numpy as np

from frugalnas.data.sources.base import SOURCES, Record, Source


@SOURCES.register("digits")
class DigitsSource(Source):
    name = "digits"
    channels = 1

    def __init__(self, argument=None, *, seed=0):
        super().__init__(argument, seed=seed)
        self.classes = [str(d) for d in range(10)]

    def records(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        # 0..16 ink levels -> 0..255 grey levels
        images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        for index, (pixels, label) in enumerate(zip(images, digits.target)):
            yield Record("train", f"sklearn-digits#{index}", load=lambda p=pixels: p, label=int(label))
