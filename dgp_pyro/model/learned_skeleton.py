r"""A skeleton learned from the labeled frames: which body parts hold together, by how much, where.

Deep Graph Pose's skeletal potential pulls the two ends of each user-drawn edge together,
:math:`\tfrac12 w \|y_i - y_j\|^2`. Many projects draw no skeleton, and the zero-mean pull only
suits parts that sit close. The labels say more: across the labeled frames some pairs of
body parts keep an almost fixed offset along some axis, whatever the animal does. The two
mirror views of a paw share their x coordinate; an ear stays a fixed step from the nose. Such
a pair is the potential

.. math::
    \phi_s(y_{t,i}, y_{t,j}) = \tfrac12 \sum_a w_a^{ij} \, (y_{t,i,a} - y_{t,j,a} - o^{ij}_a)^2,
    \qquad o^{ij} = \overline{y_i - y_j}, \quad
    w_a^{ij} = \frac{s}{\kappa \, \widehat{\operatorname{var}}(y_{i,a} - y_{j,a})},

one term per edge and axis (:class:`~dgp_pyro.model.potentials.SkeletalPotential` with an
offset), so the posterior can use a confident view of a part to place its partner.

**Which edges.** A Gaussian tree is the best tree-shaped approximation of a joint Gaussian when
its edges maximise the summed mutual information (Chow and Liu, 1968). Per axis the
information a pair shares grows as :math:`q_a = \operatorname{var}(y_i - y_j) /
(\operatorname{var} y_i + \operatorname{var} y_j)` falls (:math:`q = 1 - \rho` for equal spreads),
so the edges are the minimum spanning forest of :math:`\sum_a \log q_a` (Kruskal). A tree keeps
the prior free of double counting: each pair's relation enters once. A pair enters only when
both parts are labeled together in at least half the labeled frames (and at least
:data:`MIN_PAIRS`): a part labeled in 5 of 20 frames (a tongue that shows now and then) has
a spread that those frames understate, and held-out frames then fall far outside it.

**How strong.** :math:`\kappa` (:data:`VARIANCE_INFLATION`) widens the labeled spread: 20 labels
understate the spread of the frames the network will see, and a wrongly tight prior lets the
outlier-robust likelihood (:mod:`dgp_pyro.model.outliers`) call a right heatmap an outlier.
Measured on the DeepLabCut benchmark's mirror-mouse split (20 labels, 70 held-out images),
first on one ``dgp`` network's held-out heatmaps with the skeleton added after training:
mean error 9.63 px without a skeleton, 7.53 px with this one at :math:`\kappa = 6.7` and 7.59
at :math:`\kappa = 4` (RMSE 21.9 -> 12.8); one weight per edge for both axes instead of one per
axis gave 8.8 px. Trained with it (:math:`\kappa = 5`, the default): 7.40 px, RMSE 15.3
(seed 1: 7.90 px against ``supervised``'s 9.00; seed 0's ``supervised``: 10.04). On
``reaching-mackenzie`` (a ``supervised`` network; its parts move against each other) the
forest changed the error from 10.1 to 10.3 px, and to 12.7 px before rarely labeled parts
were left out. :math:`s` is the run's ``skeletal_strength``.

Symbols: :math:`i, j` keypoints, :math:`a` axis, :math:`o` mean offset, :math:`w` weight (1/px²),
:math:`s` user strength, :math:`\kappa` variance inflation, :math:`q` the spread ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

__all__ = ["MIN_PAIRS", "SD_FLOOR", "VARIANCE_INFLATION", "LearnedSkeleton", "learned_skeleton"]

#: :math:`\kappa`: the labeled spread of each edge is widened this much (module docstring).
VARIANCE_INFLATION = 5.0
#: An edge needs its two parts labeled together in at least this many frames (and half of them).
MIN_PAIRS = 5
#: Spreads (pixels) are at least this: labels are clicked to a pixel or two.
SD_FLOOR = 2.0


@dataclass
class LearnedSkeleton:
    """Edges ``(i, j)`` (keypoint indices), weights ``(E, d)`` and mean offsets ``y_i - y_j`` ``(E, d)``."""

    edges: list[tuple[int, int]]
    weight: np.ndarray
    offset: np.ndarray


def learned_skeleton(
    labels: Float[np.ndarray, "frames keypoints dim"], strength: float = 1.0
) -> LearnedSkeleton:
    """The Chow-Liu forest of the labeled keypoints with each edge's mean offset and per-axis weight.

    ``labels`` are the training labels (NaN where missing), in the pixels the model works in.
    Keypoints that no pair qualifies for are left out (no edge), as is every pair when fewer
    than :data:`MIN_PAIRS` frames are labeled.
    """
    labels = np.asarray(labels, dtype=np.float64)
    frames, keypoints, dim = labels.shape
    labeled = np.isfinite(labels).all(-1)  # (N, J)
    min_pairs = max(MIN_PAIRS, math.ceil(0.5 * frames))
    floor = SD_FLOOR**2
    spread = np.array(
        [
            np.maximum(np.var(labels[labeled[:, j], j], axis=0, ddof=1), floor)
            if labeled[:, j].sum() >= 2
            else np.full(dim, np.inf)
            for j in range(keypoints)
        ]
    )  # (J, d)
    candidates = []
    stats = {}
    for i in range(keypoints):
        for j in range(i + 1, keypoints):
            both = labeled[:, i] & labeled[:, j]
            if both.sum() < min_pairs:
                continue
            difference = labels[both, i] - labels[both, j]
            variance = np.maximum(np.var(difference, axis=0, ddof=1), floor)
            ratio = variance / (spread[i] + spread[j])
            candidates.append((float(np.log(ratio).sum()), i, j))
            stats[i, j] = (difference.mean(0), variance)
    parent = list(range(keypoints))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    edges, weight, offset = [], [], []
    for _, i, j in sorted(candidates):
        if root(i) == root(j):
            continue
        parent[root(i)] = root(j)
        mean, variance = stats[i, j]
        edges.append((i, j))
        offset.append(mean)
        weight.append(strength / (VARIANCE_INFLATION * variance))
    shape = (len(edges), dim)
    return LearnedSkeleton(edges, np.reshape(weight, shape), np.reshape(offset, shape))
