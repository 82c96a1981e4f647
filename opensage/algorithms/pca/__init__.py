"""Built-in PCA (SageMaker's ``pca`` image): hyperparameters.py, train.py
(``python -m opensage.algorithms.pca.train``), serve.py.

``regular`` mode is exact (an SVD of the centred data, or the eigendecomposition of its d x d Gram matrix,
accumulated over chunks of float32 rows into float64, when rows far outnumber features); ``randomized`` is
Halko et al.'s randomized SVD in the rows' dtype (scikit-learn's
``randomized_svd``, ``extra_components`` oversamples; -1 = max(10, num_components)). ``subtract_mean=false``
decomposes the raw rows. As in SageMaker's model (``mean``, ``v``, ``s``), components are stored and
projected in *ascending* order of singular value: the most significant component is the last column.
"""
