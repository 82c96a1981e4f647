"""Built-in linear learner (SageMaker's ``linear-learner`` image): hyperparameters.py, solver.py, evaluation.py,
train.py (``python -m opensage.algorithms.linear_learner.train``), serve.py.

Like SageMaker's, it trains several linear models in parallel on the same mini-batches (``num_models``: the
given optimizer settings plus nearby learning rates and regularisation where those are ``auto``), on data
normalised from a sample of ``num_point_for_scaler`` rows, keeps each model's best epoch, selects one on the
validation channel (else train) by ``binary_classifier_model_selection_criteria`` or the objective loss,
calibrates a binary classifier's threshold, and reports SageMaker's metrics for train / validation / test.
Early stopping (``early_stopping_patience`` / ``_tolerance``) watches the objective loss on validation, else
train. Regression labels are normalised by default (``normalize_label``), so ``huber_delta`` and
``loss_insensitivity`` apply to normalised labels; losses are reported in label units.

One addition: when the mini-batch steps are few (under 2,000 in all, e.g. a few hundred rows with SageMaker's
default mini_batch_size) and the loss is smooth without L1, each model is polished by full-batch L-BFGS on
the same regularised objective before selection, so small data sets reach scikit-learn's quality instead of
stopping wherever 15 Adam steps leave them.
"""
