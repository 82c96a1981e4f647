"""Stand-ins for packages that AWS's framework images carry but PyPI does not have.

Each sub-package is put on an image environment's ``sys.path`` under its own top-level name
(``opensage.environments`` links it beside the platform package, as ``EnvironmentSpec.toolkits`` names it), so a
user's script imports it as it does in the real container: ``from sagemaker_xgboost_container import
distributed``. They hold no logic of their own beyond the container's signatures: the work is the platform's.
"""
