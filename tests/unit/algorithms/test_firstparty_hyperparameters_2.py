"""Hyperparameters of knn, factorization-machines and randomcutforest: SageMaker's names, defaults, required
ones and validation; everything the SDK's estimators can send parses."""

import os

import pytest

from opensage.algorithms.factorization_machines import hyperparameters as fm_hp
from opensage.algorithms.firstparty import HyperparameterError
from opensage.algorithms.ipinsights import hyperparameters as ipi_hp
from opensage.algorithms.knn import hyperparameters as knn_hp
from opensage.algorithms.lda import hyperparameters as lda_hp
from opensage.algorithms.ntm import hyperparameters as ntm_hp
from opensage.algorithms.randomcutforest import hyperparameters as rcf_hp

KNN = {"feature_dim": "64", "k": "5", "predictor_type": "classifier", "sample_size": "1000"}
FM = {"feature_dim": "100", "num_factors": "8", "predictor_type": "binary_classifier"}


def test_knn_parse_defaults_and_pq_m_default():
    hp = knn_hp.parse(KNN)
    assert (hp["index_type"], hp["index_metric"], hp["faiss_index_ivf_nlists"], hp["mini_batch_size"]) == \
        ("faiss.Flat", "L2", None, 5000)
    assert knn_hp.parse({**KNN, "index_type": "faiss.IVFPQ"})["faiss_index_pq_m"] == 32


@pytest.mark.parametrize(("raw", "named"), [
    ({k: v for k, v in KNN.items() if k != "sample_size"}, "'sample_size' is a required property"),
    ({**KNN, "predictor_type": "binary_classifier"}, "predictor_type"),
    ({**KNN, "k": "0"}, "'k'"),
    ({**KNN, "dimension_reduction_type": "sign"}, "'dimension_reduction_target' is a required property"),
    ({**KNN, "dimension_reduction_type": "pca", "dimension_reduction_target": "8"}, "dimension_reduction_type"),
    ({**KNN, "dimension_reduction_type": "fjlt", "dimension_reduction_target": "64"}, "dimension_reduction_target"),
    ({**KNN, "index_type": "faiss.HNSW"}, "index_type"),
    ({**KNN, "index_type": "faiss.IVFPQ", "faiss_index_pq_m": "5"}, "faiss_index_pq_m"),
    ({**KNN, "index_type": "faiss.IVFPQ", "faiss_index_pq_m": "48"}, "faiss_index_pq_m (48) must divide"),
    ({**KNN, "faiss_index_ivf_nlists": "many"}, "faiss_index_ivf_nlists"),
])
def test_knn_parse_bad_or_missing_raises_naming_it(raw, named):
    with pytest.raises(HyperparameterError) as info:
        knn_hp.parse(raw)
    assert str(info.value).startswith("ClientError: Unable to initialize the algorithm. Failed to validate input "
                                      "hyperparameters.") and named in str(info.value)


def test_factorization_machines_parse_defaults_and_conditional_requirements():
    hp = fm_hp.parse(FM)
    assert (hp["epochs"], hp["mini_batch_size"], hp["bias_lr"], hp["linear_lr"], hp["factors_lr"]) == \
        (1, 1000, 0.1, 0.001, 0.0001)
    assert (hp["factors_init_method"], hp["factors_init_sigma"], hp["factors_wd"], hp["clip_gradient"]) == \
        ("normal", 0.001, 0.00001, None)
    with pytest.raises(HyperparameterError, match="'num_factors' is a required property"):
        fm_hp.parse({k: v for k, v in FM.items() if k != "num_factors"})
    with pytest.raises(HyperparameterError, match="predictor_type"):
        fm_hp.parse({**FM, "predictor_type": "multiclass_classifier"})
    with pytest.raises(HyperparameterError, match="'bias_init_scale' is a required property when"):
        fm_hp.parse({**FM, "bias_init_method": "uniform"})
    with pytest.raises(HyperparameterError, match="'linear_init_value' is a required property when"):
        fm_hp.parse({**FM, "linear_init_method": "constant"})
    with pytest.raises(HyperparameterError, match="factors_lr"):
        fm_hp.parse({**FM, "factors_lr": "-1"})


def test_randomcutforest_parse_defaults_ranges():
    hp = rcf_hp.parse({"feature_dim": "3"})
    assert (hp["num_trees"], hp["num_samples_per_tree"], hp["eval_metrics"]) == \
        (100, 256, ["accuracy", "precision_recall_fscore"])
    for raw, named in [({"feature_dim": "3", "num_trees": "49"}, "num_trees"),
                       ({"feature_dim": "3", "num_samples_per_tree": "4096"}, "num_samples_per_tree"),
                       ({"feature_dim": "10001"}, "feature_dim"), ({}, "'feature_dim' is a required property")]:
        with pytest.raises(HyperparameterError, match=named):
            rcf_hp.parse(raw)


def test_lda_parse_defaults_and_required():
    hp = lda_hp.parse({"num_topics": "5", "feature_dim": "100", "mini_batch_size": "50"})
    assert (hp["alpha0"], hp["max_restarts"], hp["max_iterations"], hp["tol"]) == (1.0, 10, 1000, 1e-8)
    with pytest.raises(HyperparameterError, match="'mini_batch_size' is a required property"):
        lda_hp.parse({"num_topics": "5", "feature_dim": "100"})
    with pytest.raises(HyperparameterError, match="alpha0"):
        lda_hp.parse({"num_topics": "5", "feature_dim": "100", "mini_batch_size": "50", "alpha0": "0"})


def test_ipinsights_parse_defaults_and_ranges():
    hp = ipi_hp.parse({"num_entity_vectors": "100", "vector_dim": "16"})
    assert (hp["epochs"], hp["mini_batch_size"], hp["num_ip_encoder_layers"], hp["random_negative_sampling_rate"],
            hp["shuffled_negative_sampling_rate"], hp["learning_rate"]) == (10, 10000, 1, 1, 1, 0.001)
    with pytest.raises(HyperparameterError, match="'num_entity_vectors' is a required property"):
        ipi_hp.parse({"vector_dim": "16"})
    with pytest.raises(HyperparameterError, match="vector_dim"):
        ipi_hp.parse({"num_entity_vectors": "100", "vector_dim": "2"})


def test_ntm_parse_defaults_encoder_layers_forms():
    hp = ntm_hp.parse({"feature_dim": "100", "num_topics": "5"})
    assert (hp["encoder_layers"], hp["optimizer"], hp["epochs"], hp["mini_batch_size"], hp["encoder_layers_activation"],
            hp["num_patience_epochs"], hp["tolerance"]) == ([15, 10], "adadelta", 50, 256, "sigmoid", 3, 0.001)
    assert ntm_hp.parse({"feature_dim": "9", "num_topics": "2", "encoder_layers": "[100, 50]"})["encoder_layers"] == \
        [100, 50]
    assert ntm_hp.parse({"feature_dim": "9", "num_topics": "2", "encoder_layers": "30,20"})["encoder_layers"] == [30, 20]
    with pytest.raises(HyperparameterError, match="num_topics"):
        ntm_hp.parse({"feature_dim": "9", "num_topics": "1"})
    with pytest.raises(HyperparameterError, match="encoder_layers"):
        ntm_hp.parse({"feature_dim": "9", "num_topics": "2", "encoder_layers": "[0]"})


def test_sdk_estimators_every_hyperparameter_they_can_send_accepted():
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    import boto3
    import sagemaker

    session = sagemaker.Session(boto_session=boto3.Session(region_name="us-east-1", aws_access_key_id="k",
                                                           aws_secret_access_key="s"))
    common = {"role": "arn:aws:iam::000000000000:role/R", "instance_count": 1, "instance_type": "ml.m5.large",
              "sagemaker_session": session, "data_location": "s3://bucket/record-sets/"}
    knn = sagemaker.KNN(k=10, sample_size=500, predictor_type="regressor", dimension_reduction_type="fjlt",
                        dimension_reduction_target=16, index_type="faiss.IVFPQ", index_metric="INNER_PRODUCT",
                        faiss_index_ivf_nlists="auto", faiss_index_pq_m=8, **common)
    knn.feature_dim, knn.mini_batch_size = 64, 100
    hp = knn_hp.parse(knn.hyperparameters())
    assert (hp["dimension"], hp["faiss_index_pq_m"], hp["index_metric"]) == (16, 8, "INNER_PRODUCT")
    fm = sagemaker.FactorizationMachines(
        num_factors=4, predictor_type="regressor", epochs=3, clip_gradient=5.0, eps=1e-7, rescale_grad=1.0,
        bias_lr=0.2, linear_lr=0.01, factors_lr=0.001, bias_wd=0.1, linear_wd=0.01, factors_wd=0.001,
        bias_init_method="uniform", bias_init_scale=0.1, bias_init_sigma=0.02, bias_init_value=0.0,
        linear_init_method="constant", linear_init_scale=0.1, linear_init_sigma=0.02, linear_init_value=0.5,
        factors_init_method="normal", factors_init_scale=0.1, factors_init_sigma=0.02, factors_init_value=0.0,
        **common)
    fm.feature_dim, fm.mini_batch_size = 20, 100
    assert fm_hp.parse(fm.hyperparameters())["linear_init_value"] == 0.5
    rcf = sagemaker.RandomCutForest(num_trees=60, num_samples_per_tree=128, eval_metrics=["accuracy"], **common)
    rcf.feature_dim, rcf.mini_batch_size = 4, 1000
    assert rcf_hp.parse(rcf.hyperparameters())["eval_metrics"] == ["accuracy"]
    lda = sagemaker.LDA(num_topics=5, alpha0=0.5, max_restarts=2, max_iterations=50, tol=1e-5,
                        **{**common, "instance_count": 1})
    lda.feature_dim, lda.mini_batch_size = 100, 20
    assert lda_hp.parse(lda.hyperparameters())["alpha0"] == 0.5
    ipi = sagemaker.IPInsights(num_entity_vectors=100, vector_dim=16, batch_metrics_publish_interval=10, epochs=2,
                               learning_rate=0.01, num_ip_encoder_layers=2, random_negative_sampling_rate=2,
                               shuffled_negative_sampling_rate=3, weight_decay=0.1, **common)
    ipi.feature_dim, ipi.mini_batch_size = 2, 100
    assert ipi_hp.parse(ipi.hyperparameters())["num_ip_encoder_layers"] == 2
    ntm = sagemaker.NTM(num_topics=5, encoder_layers=[40, 20], epochs=3, encoder_layers_activation="tanh",
                        optimizer="adam", tolerance=0.01, num_patience_epochs=2, batch_norm=True,
                        rescale_gradient=0.5, clip_gradient=1.0, weight_decay=0.01, learning_rate=0.01, **common)
    ntm.feature_dim, ntm.mini_batch_size = 100, 20
    assert ntm_hp.parse(ntm.hyperparameters())["encoder_layers"] == [40, 20]
