"""Built-in LDA (SageMaker's ``lda`` image): hyperparameters.py, train.py (``python -m
opensage.algorithms.lda.train``), serve.py.

Latent Dirichlet allocation over word-count documents (rows of ``feature_dim`` = vocabulary size counts),
fitted with scikit-learn's batch variational Bayes (``LatentDirichletAllocation``; SageMaker's own container
uses a spectral method, the model is the same) with a symmetric document-topic prior ``alpha0 / num_topics``.
``max_restarts`` random initialisations (at most ``MAX_RESTARTS``) are fitted and the one with the best
variational bound kept. ``test`` reports ``test:pwll``, the per-word log-likelihood (bound) of the test documents.
Serving infers each document's ``topic_mixture`` with the same variational E-step as scikit-learn's
``transform``, in numpy.
"""
