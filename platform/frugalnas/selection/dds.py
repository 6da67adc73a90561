"""``dds``: DDS-NAS dynamic data selection (Poyser & Breckon 2025).

Once the model has mastered its class-balanced subset, each easy image is swapped for the image of
the same class that is furthest from it in the autoencoder's latent space: the most dissimilar
example the model has not trained on, so the subset keeps covering new parts of each class.
"""
from __future__ import annotations

import numpy as np

from frugalnas.selection.base import SELECTORS, preview
from frugalnas.selection.dynamic import DynamicSelector
from frugalnas.selection.furthest import FurthestIndex


@SELECTORS.register("dds")
class DDSSelector(DynamicSelector):
    """:class:`DynamicSelector` whose replacement is ``index.furthest(easy_id, exclude)``.

    ``index`` must be built over exactly the training images, with the same labels: a larger index
    could hand back validation images, a smaller one would fail mid-search.
    """

    name = "dds"
    needs = ("latents",)

    def __init__(
        self,
        train_ids,
        train_labels,
        *,
        index: FurthestIndex,
        subset_size=None,
        seed=0,
        hardness=0.9,
        mastery=0.6,
        warmup_epochs=5,
        curriculum_stages=0,
        total_epochs=None,
        order="curriculum",
        easy_quantile=None,
        mastery_rule="accuracy",
    ):
        super().__init__(
            train_ids,
            train_labels,
            subset_size=subset_size,
            seed=seed,
            hardness=hardness,
            mastery=mastery,
            warmup_epochs=warmup_epochs,
            curriculum_stages=curriculum_stages,
            total_epochs=total_epochs,
            order=order,
            easy_quantile=easy_quantile,
            mastery_rule=mastery_rule,
        )
        if not isinstance(index, FurthestIndex):
            raise TypeError(
                f"dds needs index= a FurthestIndex (e.g. ExactFurthest over the training latents), "
                f"got {type(index).__name__}"
            )
        index_ids = np.asarray(index.ids, dtype=np.int64)
        missing = np.setdiff1d(self._sorted_ids, index_ids)
        extra = np.setdiff1d(index_ids, self._sorted_ids)
        if missing.size or extra.size:
            raise ValueError(
                "the furthest-neighbour index must cover exactly the training images: "
                f"missing training ids {preview(missing)}, ids that are not training images "
                f"{preview(extra)}"
            )
        order = np.argsort(index_ids)
        differ = index_ids[order][np.asarray(index.labels)[order] != self._sorted_labels]
        if differ.size:
            raise ValueError(f"the index's labels differ from train_labels for ids {preview(differ)}")
        self.index = index

    def replacement(self, easy_id, exclude):
        return self.index.furthest(easy_id, exclude)
