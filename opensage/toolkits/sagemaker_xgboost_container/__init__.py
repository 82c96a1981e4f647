"""Stand-in for ``sagemaker_xgboost_container`` (aws/sagemaker-xgboost-container, installed in the
sagemaker-xgboost images, not on PyPI): the modules user scripts import, ``data_utils`` (``get_dmatrix``) and
``distributed`` (``rabit_run``, ``wait_hostname_resolution``), as AWS's ``abalone.py`` uses them. Data is read
by the built-in algorithm's readers, hosts join the platform's XGBoost collective."""
