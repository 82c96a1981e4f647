"""Built-in Neural Topic Model (SageMaker's ``ntm`` image): hyperparameters.py, model.py, train.py
(``python -m opensage.algorithms.ntm.train``), serve.py.

A neural variational document model (Miao et al. 2016) with a logistic-normal topic layer, in PyTorch: an
encoder (``encoder_layers`` fully connected layers, ``encoder_layers_activation``, optional ``batch_norm``) maps a
document's word counts to the mean and log-variance of a Gaussian; a sample passed through softmax gives the topic
weights; the decoder's word distribution is ``softmax(theta @ W + b)``. The loss (``total_loss``) is the
reconstruction negative log-likelihood plus the KL divergence to N(0, I), per document. ``validation`` drives early
stopping (``num_patience_epochs``, ``tolerance``); ``auxiliary`` may hold ``vocab.txt`` (one word per line) to
log each topic's top words. Serving answers ``topic_weights`` = softmax of the encoder mean, in numpy.
"""
