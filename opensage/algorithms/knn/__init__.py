"""Built-in k-nearest-neighbours (SageMaker's ``knn`` image): hyperparameters.py, index.py, train.py
(``python -m opensage.algorithms.knn.train``), serve.py.

Training samples ``sample_size`` labelled rows of ``train``, optionally reduces their dimension
(``dimension_reduction_type`` ``sign``: a dense random ±1 projection; ``fjlt``: a fast Johnson-Lindenstrauss
transform, random signs + Walsh-Hadamard + coordinate sampling) and builds the index of ``index_type``:
``faiss.Flat`` (exact search), ``faiss.IVFFlat`` (k-means coarse lists, a few probed per query) or
``faiss.IVFPQ`` (the same lists, residuals product-quantised) — faiss's methods written with numpy and
scikit-learn's k-means; exact L2 search of large query sets (the test channel) goes through scikit-learn's
fused brute-force k-nearest search. Serving answers ``predicted_label`` (majority vote of the k labels, ties to the smallest
label as scikit-learn's KNeighborsClassifier; the mean for a regressor) and, with ``verbose=true`` in Accept,
the neighbours' ``labels`` and ``distances`` (nearest first). ``test`` reports ``test:accuracy`` / ``test:mse``.
"""
