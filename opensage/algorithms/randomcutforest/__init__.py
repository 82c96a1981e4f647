"""Built-in Random Cut Forest (SageMaker's ``randomcutforest`` image): hyperparameters.py, forest.py,
train.py (``python -m opensage.algorithms.randomcutforest.train``), serve.py.

The algorithm of Guha et al. (2016) as AWS's random-cut-forest library scores it, in numpy: each of
``num_trees`` trees is built on ``num_samples_per_tree`` rows sampled from ``train``, cutting a dimension
chosen in proportion to its range at a uniform value. A row's score in one tree walks from its leaf to the
root: unseen at the leaf ``1 / (depth + 1)``, then at each ancestor ``p / (depth + 1) + (1 - p) * score``
where ``p`` is the probability that a random cut of the ancestor's bounding box extended by the row separates
the row; scaled by ``log2(sample size + 1)`` and averaged over the trees. Inliers score about 1, anomalies
several times more.
"""
