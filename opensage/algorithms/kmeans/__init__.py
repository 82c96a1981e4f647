"""Built-in k-means (SageMaker's ``kmeans`` image): hyperparameters.py, train.py
(``python -m opensage.algorithms.kmeans.train``), serve.py.

SageMaker's two stages: web-scale mini-batch k-means (Sculley 2010) finds ``k * extra_center_factor``
centers in ``epochs`` shuffled passes of ``mini_batch_size`` rows (numpy steps in train.py; ``init_method``
random rows or scikit-learn's ``kmeans_plusplus`` on a 3-batch sample), then a local Lloyd's k-means over those
centers, weighted by how many rows each one took, reduces them to ``k``
(scikit-learn's ``KMeans``: ``local_lloyd_init_method``, ``local_lloyd_num_trials`` restarts,
``local_lloyd_max_iter``, ``local_lloyd_tol``); where the rows fit in memory, Lloyd's iterations over them
finish the fit. The ``test`` channel reports ``test:msd`` / ``test:ssd``.
"""
