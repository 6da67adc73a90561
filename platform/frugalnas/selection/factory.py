"""Building a selector from experiment settings: each policy gets only the parameters it takes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from frugalnas.selection.base import SELECTORS, Selector, make_selector
from frugalnas.selection.entropy import DEFAULT_BIN_WIDTH, load_entropy_scores
from frugalnas.selection.furthest import FURTHEST_INDEXES

def is_dynamic(policy: str) -> bool:
    """Whether the policy re-forms its subset on mastery (DDS's loop: hardness, mastery, updates)."""
    from frugalnas.selection.dynamic import DynamicSelector

    return issubclass(SELECTORS.get(policy), DynamicSelector)


def policy_needs(policy: str) -> tuple[str, ...]:
    """What a policy needs made once per dataset before any selector is built: ``"latents"``
    (autoencoder embeddings: :func:`frugalnas.embed.latents.ensure_embedding`) and/or ``"entropy"``
    (reference-model scores: :func:`frugalnas.train.reference.ensure_entropy_scores`)."""
    return SELECTORS.get(policy).needs


def needs_latents(policy: str) -> bool:
    """Whether the policy replaces images by furthest latent neighbour (and so needs embeddings)."""
    return "latents" in policy_needs(policy)


def needs_entropy(policy: str) -> bool:
    """Whether the policy samples by a reference model's prediction entropy (and so needs its scores)."""
    return "entropy" in policy_needs(policy)


def selector_from_settings(policy: str, train_ids: np.ndarray, train_labels: np.ndarray, *, subset_size: int | None,
                           hardness: float = 0.9, mastery: float = 0.6, warmup_epochs: int = 5,
                           curriculum_stages: int = 0, total_epochs: int | None = None, seed: int = 0,
                           order: str = "curriculum", easy_quantile: float | None = None,
                           mastery_rule: str = "accuracy",
                           latents: tuple[np.ndarray, np.ndarray] | None = None,
                           index: str = "kdtree",
                           entropy_scores: str | Path | tuple[np.ndarray, np.ndarray] | None = None,
                           entropy_bin_width: float = DEFAULT_BIN_WIDTH, coverage_quantile: float = 0.9) -> Selector:
    """A ready selector. ``latents`` = (ids, vectors) covering the training ids (dds only);
    ``index`` names the furthest-neighbour index built over them. ``entropy_scores`` = (ids, values)
    or the Parquet file of :func:`frugalnas.train.reference.ensure_entropy_scores` (entropy only),
    ``entropy_bin_width`` its histogram's bin width (log10 units); ``coverage_quantile`` the share of
    each class dds-coverage draws replacements from."""
    kwargs = {"subset_size": subset_size, "seed": seed}
    if policy == "dds-coverage":
        kwargs["coverage_quantile"] = coverage_quantile
    if is_dynamic(policy):
        kwargs.update(hardness=hardness, mastery=mastery, warmup_epochs=warmup_epochs,
                      curriculum_stages=curriculum_stages, total_epochs=total_epochs, order=order,
                      easy_quantile=easy_quantile, mastery_rule=mastery_rule)
    if needs_latents(policy):
        if latents is None:
            raise ValueError("the dds selector needs latents (ids, vectors) of the training images")
        latent_ids, vectors = latents
        row = {int(i): r for r, i in enumerate(latent_ids)}
        missing = [int(i) for i in train_ids if int(i) not in row]
        if missing:
            raise ValueError(f"the embeddings lack {len(missing)} training image(s), e.g. ids {missing[:5]}: re-run embed")
        rows = np.array([row[int(i)] for i in train_ids])
        kwargs["index"] = FURTHEST_INDEXES.get(index)(train_ids, vectors[rows], train_labels)
    if needs_entropy(policy):
        if entropy_scores is None:
            raise ValueError("the entropy selector needs entropy_scores: (ids, values) or the file made by "
                             "ensure_entropy_scores")
        if isinstance(entropy_scores, (str, Path)):
            entropy_scores = load_entropy_scores(entropy_scores)
        kwargs.update(entropy=tuple(entropy_scores), bin_width=entropy_bin_width)
    return make_selector(policy, train_ids, train_labels, **kwargs)
