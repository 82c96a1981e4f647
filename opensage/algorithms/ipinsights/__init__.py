"""Built-in IP Insights (SageMaker's ``ipinsights`` image): hyperparameters.py, model.py, train.py
(``python -m opensage.algorithms.ipinsights.train``), serve.py.

Learns embeddings of entities and of IPv4 addresses whose dot product is high for (entity, IP) pairs seen
together. Entities are hashed (crc32) into ``num_entity_vectors`` buckets; an IP's vector is the sum of
hashed embeddings of its /8, /16, /24 and /32 prefixes (so unseen addresses in a known subnet land near it)
passed through ``num_ip_encoder_layers`` fully connected layers. Training (PyTorch) is a discriminator: the
observed pairs against negatives made by pairing each entity with uniformly random IPv4 addresses
(``random_negative_sampling_rate`` per pair) and with IPs of other pairs in the batch
(``shuffled_negative_sampling_rate``). ``validation`` reports ``validation:discriminator_auc``.
"""
