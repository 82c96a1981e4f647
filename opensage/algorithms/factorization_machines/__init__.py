"""Built-in factorization machines (SageMaker's ``factorization-machines`` image): hyperparameters.py,
train.py (``python -m opensage.algorithms.factorization_machines.train``), serve.py.

A degree-2 factorization machine (Rendle 2010): ``y = w0 + <w, x> + sum_{i<j} <v_i, v_j> x_i x_j``, computed
in O(k nnz) as ``0.5 * sum_f ((x V)_f^2 - (x^2 V^2)_f)``. Trained with PyTorch on sparse mini-batches (Adam with
SageMaker's per-term learning rates and weight decays ``bias_*``, ``linear_*``, ``factors_*``); logistic loss
for ``binary_classifier`` (``score`` = sigmoid, ``predicted_label`` = score > 0.5), squared loss for
``regressor``. Serving is numpy only.
"""
