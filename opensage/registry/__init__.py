"""Model registry helpers (the service is opensage/services/registry.py, installed by capabilities/registry.py):
request checks for model packages and Python-side paging of the lists the resources table cannot filter."""
