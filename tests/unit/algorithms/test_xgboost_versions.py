"""Built-in XGBoost per container version (OPENSAGE_IMAGE_VERSION): hyperparameters, model files, bodies, /ping.

The spec is ../shared/reference/xgboost-container-versions.md (X2-X5), read from aws/sagemaker-xgboost-container's
branches. ``data/xgb090-booster.pkl`` is a Booster pickled by xgboost 0.90 (the format AWS's 0.90 images write),
made in a throwaway venv: ``pip install xgboost==0.90 'numpy<2'``; 3 features, binary:logistic, 3 rounds, trained on
``np.random.RandomState(0).rand(50, 3)`` with label ``x0 > 0.5``; xgboost 0.90 predicts
``[0.7838502526283264, 0.22058989107608795]`` for rows ``[0.9,0.1,0.2]`` and ``[0.1,0.5,0.5]``.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from opensage.algorithms.content import MlPaths
from opensage.algorithms.xgboost import save_booster, serve, train, versions
from opensage.algorithms.xgboost.hyperparameters import HyperparameterError, parse_hyperparameters
from opensage.algorithms.xgboost.versions import ContainerVersion

XGB090_PICKLE = Path(__file__).parent / "data" / "xgb090-booster.pkl"
LEGACY = ("0.90-1", "0.90-2", "1.0-1", "1.2-1")
CURRENT = ("1.2-2", "1.3-1", "1.5-1", "1.7-1", "3.0-5")


def V(tag: str | None) -> ContainerVersion:  # noqa: N802 - reads like a literal in the tables below
    return ContainerVersion(tag)


# ------------------------------------------------------------------------------------------ the version


def test_image_version_unset_or_empty_means_newest():
    assert versions.image_version({}) is None
    assert versions.image_version({"OPENSAGE_IMAGE_VERSION": ""}) is None
    assert versions.image_version({"OPENSAGE_IMAGE_VERSION": " 1.0-1-cpu-py3 "}) == "1.0-1"
    assert versions.current({"OPENSAGE_IMAGE_VERSION": "0.90-2"}).tag == "0.90-2"
    assert not V(None).lazy_model_load and not V(None).legacy_realtime_output


def test_version_from_image_tag_forms_parsed():
    prefix = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost"
    assert versions.version_from_image(f"{prefix}:0.90-1-cpu-py3") == "0.90-1"
    assert versions.version_from_image(f"{prefix}:1.7-1") == "1.7-1"
    assert versions.version_from_image(f"{prefix}:latest") is None
    assert versions.version_from_image(f"{prefix}@sha256:abc") is None


# ------------------------------------------------------------------------------------------ hyperparameters


@pytest.mark.parametrize("tag", ["0.90-1", "0.90-2", "1.0-1"])
def test_parse_hyperparameters_silent_before_12_accepted(tag):
    hps = parse_hyperparameters({"num_round": "3", "silent": "1"}, V(tag))
    assert hps.params["silent"] == 1


@pytest.mark.parametrize("tag", ["1.2-1", "1.2-2", "1.3-1", "1.5-1", "1.7-1", "3.0-5", None])
def test_parse_hyperparameters_silent_from_12_refused(tag):
    with pytest.raises(HyperparameterError) as e:
        parse_hyperparameters({"num_round": "3", "silent": "1"}, V(tag))
    if tag is not None:
        assert str(e.value) == "Extraneous hyperparameter found: silent"


@pytest.mark.parametrize(("name", "value", "first"), [
    ("num_parallel_tree", "2", "0.90-2"), ("learning_rate", "0.2", "0.90-2"),
    ("monotone_constraints", "(1,0,0)", "1.0-1"), ("aft_loss_distribution", "normal", "1.2-1"),
    ("_kfold", "3", "1.2-2"), ("sampling_method", "uniform", "1.3-1"), ("use_dask_gpu_training", "false", "1.5-1")])
def test_parse_hyperparameters_added_name_refused_before_its_version(name, value, first):
    raw = {"num_round": "3", name: value, "tree_method": "exact"}
    for tag in versions.KNOWN_VERSIONS:
        if versions.parse_version(tag) < versions.parse_version(first):
            with pytest.raises(HyperparameterError, match=f"^Extraneous hyperparameter found: {name}$"):
                parse_hyperparameters(raw, V(tag))
        else:
            parse_hyperparameters(raw, V(tag))


def test_parse_hyperparameters_removed_names_refused_after_removal():
    parse_hyperparameters({"num_round": "3", "_nfold": "3"}, V("1.2-1"))
    parse_hyperparameters({"num_round": "3", "single_precision_histogram": "true"}, V("1.5-1"))
    for raw, tag in (({"_nfold": "3"}, "1.2-2"), ({"single_precision_histogram": "true"}, "1.7-1"),
                     ({"huber_slope": "1.0"}, "3.0-5"), ({"quantile_alpha": "0.5"}, "1.7-1")):
        with pytest.raises(HyperparameterError, match="^Extraneous hyperparameter found: "):
            parse_hyperparameters({"num_round": "3", **raw}, V(tag))


def test_parse_hyperparameters_versioned_uses_toolkit_wording():
    with pytest.raises(HyperparameterError, match="^Missing required hyperparameter: num_round$"):
        parse_hyperparameters({"eta": "0.1"}, V("1.7-1"))
    with pytest.raises(HyperparameterError, match="^Hyperparameter num_round: could not parse value$"):
        parse_hyperparameters({"num_round": "50.0"}, V("1.7-1"))
    assert parse_hyperparameters({"num_round": "50.0"}).num_round == 50  # the platform's own rules
    with pytest.raises(HyperparameterError, match="^Hyperparameter objective: reg:squaredlogerror is not in"):
        parse_hyperparameters({"num_round": "3", "objective": "reg:squaredlogerror"}, V("0.90-2"))
    parse_hyperparameters({"num_round": "3", "objective": "reg:squaredlogerror"}, V("1.0-1"))
    with pytest.raises(HyperparameterError, match="^Hyperparameter eval_metric: value \\['mape'\\] not in range"):
        parse_hyperparameters({"num_round": "3", "eval_metric": "mape"}, V("1.2-2"))
    parse_hyperparameters({"num_round": "3", "eval_metric": "mape,error@0.4"}, V("1.3-1"))


def test_adapt_params_silent_becomes_verbosity_on_modern_xgboost():
    import xgboost as xgb

    assert train.adapt_params({"silent": 1}, xgb) == {"verbosity": 0}
    assert train.adapt_params({"silent": 0, "verbosity": 2}, xgb) == {"verbosity": 2}


# ------------------------------------------------------------------------------------------ training output


def _ml_root(tmp_path: Path, hyperparameters: dict[str, str]) -> MlPaths:
    root = tmp_path / "ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (root / "input" / "config" / "inputdataconfig.json").write_text(json.dumps({"train": {"ContentType": "text/csv"}}))
    rng = np.random.default_rng(0)
    X = rng.random((120, 3))
    y = (X[:, 0] > 0.5).astype(float)
    (root / "input" / "data" / "train").mkdir(parents=True)
    np.savetxt(root / "input" / "data" / "train" / "d.csv", np.column_stack([y, X]), delimiter=",", fmt="%.6g")
    return MlPaths(root)


@pytest.mark.parametrize(("tag", "protocol"), [("0.90-1", pickle.DEFAULT_PROTOCOL), ("1.0-1", pickle.DEFAULT_PROTOCOL),
                                               ("1.2-1", 4), ("1.2-2", 4)])
def test_train_pickle_versions_write_pickled_booster(tmp_path, monkeypatch, capsys, tag, protocol):
    import xgboost as xgb

    monkeypatch.setenv("OPENSAGE_IMAGE_VERSION", tag)
    hps = {"num_round": "3", "objective": "binary:logistic", "eval_metric": "auc"}
    if tag in ("0.90-1", "1.0-1"):
        hps["silent"] = "1"
    model = train.train(_ml_root(tmp_path, hps))
    blob = model.read_bytes()
    assert blob[:2] == bytes([0x80, protocol])
    assert isinstance(pickle.loads(blob), xgb.Booster)  # noqa: S301 - written by this test
    lines = capsys.readouterr().out.splitlines()
    # 0.90-x print %g (train-auc:1), later versions 5 decimals (train-auc:1.00000)
    assert re.fullmatch(r"\[0\]\ttrain-auc:1" if tag.startswith("0.90") else r"\[0\]\ttrain-auc:1\.00000", lines[0])


@pytest.mark.parametrize(("tag", "head"), [("1.3-1", b"{L"), ("1.7-1", b"{L"), ("3.0-5", b"{L"), (None, b"{L")])
def test_train_save_model_versions_write_model_file(tmp_path, monkeypatch, tag, head):
    if tag:
        monkeypatch.setenv("OPENSAGE_IMAGE_VERSION", tag)
    else:
        monkeypatch.delenv("OPENSAGE_IMAGE_VERSION", raising=False)
    model = train.train(_ml_root(tmp_path, {"num_round": "3", "objective": "binary:logistic"}))
    # xgboost >= 2.1 writes UBJSON for an extension-less name; the 1.3-1 ... 1.7-1 images' xgboost wrote its
    # legacy binary there (same call), which the platform's xgboost can no longer write.
    assert model.read_bytes()[:2] == head
    assert serve.pickled_booster_kind(model) is None


# ------------------------------------------------------------------------------------------ serving output


@pytest.fixture
def model_dir(tmp_path):
    import xgboost as xgb

    rng = np.random.default_rng(0)
    X = rng.random((200, 3)).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(np.float32)
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(X, label=y), 5)
    save_booster(booster, tmp_path / "xgboost-model")
    return tmp_path


ROWS = b"0.9,0.1,0.2\n0.1,0.5,0.5"


def _load(model_dir: Path, monkeypatch, tag: str | None) -> serve.XGBoostModel | serve.LazyModel:
    monkeypatch.delenv("SAGEMAKER_BATCH", raising=False)
    if tag:
        monkeypatch.setenv("OPENSAGE_IMAGE_VERSION", tag)
    else:
        monkeypatch.delenv("OPENSAGE_IMAGE_VERSION", raising=False)
    return serve.load(model_dir)


@pytest.mark.parametrize("tag", LEGACY)
def test_predict_legacy_versions_csv_comma_joined_without_newline_accept_ignored(model_dir, monkeypatch, tag):
    model = _load(model_dir, monkeypatch, tag)
    for accept in (None, "text/csv", "application/json", "image/png"):
        body, content_type = serve.predict(model, ROWS, "text/csv", accept)
        assert content_type == "text/csv"
        first, second = body.decode().split(",")
        assert float(first) > 0.5 > float(second) and not body.endswith(b"\n")
        assert first == str(float(np.float32(first)))  # float32 widened to a Python float: 0.8008546233177185


@pytest.mark.parametrize("tag", CURRENT)
def test_predict_current_versions_csv_one_value_per_line_json_scores(model_dir, monkeypatch, tag):
    model = _load(model_dir, monkeypatch, tag)
    body, content_type = serve.predict(model, ROWS, "text/csv", None)
    assert content_type == "text/csv"
    lines = body.decode().split("\n")
    assert len(lines) == 3 and lines[2] == "" and float(lines[0]) > 0.5 > float(lines[1])
    body, content_type = serve.predict(model, ROWS, "text/csv", "application/json")
    assert content_type == "application/json"
    assert json.loads(body) == {"predictions": [{"score": float(lines[0])}, {"score": float(lines[1])}]}
    assert body.startswith(b'{"predictions": [{"score": ')


@pytest.mark.parametrize("tag", CURRENT)
def test_predict_current_versions_jsonlines_500_and_unknown_accept_406(model_dir, monkeypatch, tag):
    model = _load(model_dir, monkeypatch, tag)
    with pytest.raises(serve.InferenceError) as e:
        serve.predict(model, ROWS, "text/csv", "application/jsonlines")
    assert e.value.status == 500  # SMC's encoder has json/csv/npy only
    with pytest.raises(serve.InferenceError) as e:
        serve.predict(model, ROWS, "text/csv", "text/csv, application/json")  # one media type, as cgi reads it
    assert e.value.status == 406 and "Accept type text/csv, application/json is not supported" in str(e.value)


def test_predict_current_version_default_accept_from_environment(model_dir, monkeypatch):
    model = _load(model_dir, monkeypatch, "1.7-1")
    monkeypatch.setenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "application/json")
    assert serve.predict(model, ROWS, "text/csv", "*/*")[1] == "application/json"


@pytest.mark.parametrize("tag", LEGACY + CURRENT)
def test_predict_batch_any_version_newline_joined_with_trailing_newline(model_dir, monkeypatch, tag):
    model = _load(model_dir, monkeypatch, tag)
    monkeypatch.setenv("SAGEMAKER_BATCH", "true")
    body, _ = serve.predict(model, ROWS, "text/csv", "text/csv")
    assert body.count(b"\n") == 2 and body.endswith(b"\n") and b"," not in body


def test_predict_legacy_multiclass_rows_printed_as_lists(tmp_path, monkeypatch):
    import xgboost as xgb

    X = np.random.default_rng(1).random((90, 2)).astype(np.float32)
    y = (X[:, 0] * 3).astype(int).astype(np.float32)
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(X, label=y), 3)
    save_booster(booster, tmp_path / "xgboost-model")
    body, _ = serve.predict(_load(tmp_path, monkeypatch, "1.0-1"), b"0.1,0.2\n0.9,0.5", "text/csv", None)
    assert re.fullmatch(r"\[[0-9.e-]+, [0-9.e-]+, [0-9.e-]+\],\[[0-9.e-]+, [0-9.e-]+, [0-9.e-]+\]", body.decode())
    body, _ = serve.predict(_load(tmp_path, monkeypatch, "1.7-1"), b"0.1,0.2\n0.9,0.5", "text/csv", None)
    assert re.fullmatch(r"([0-9.e-]+,[0-9.e-]+,[0-9.e-]+\n){2}", body.decode())


# ------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("tag", [None, "1.0-1", "1.2-2", "1.7-1", "3.0-5"])
def test_load_xgboost_090_pickle_on_modern_xgboost_clear_error(tmp_path, monkeypatch, tag):
    """Before: xgboost 3.x raised a bare UnicodeDecodeError ('utf-8' codec can't decode byte 0x80)."""
    (tmp_path / "xgboost-model").write_bytes(XGB090_PICKLE.read_bytes())
    assert serve.pickled_booster_kind(tmp_path / "xgboost-model") == "legacy"
    monkeypatch.delenv("OPENSAGE_IMAGE_VERSION", raising=False)
    if tag:
        monkeypatch.setenv("OPENSAGE_IMAGE_VERSION", tag)
    with pytest.raises((serve.ModelFormatError, serve.InferenceError)) as e:
        model = serve.load(tmp_path)
        if isinstance(model, serve.LazyModel):  # 1.0-1 loads lazily: the error comes with the first invocation
            model.get()
    message = str(e.value)
    assert "this model was saved by xgboost 0.90 (a pickled Booster" in message
    assert "run it with a 0.90 image" in message
    assert isinstance(e.value, ValueError)  # the model server's load() turns ValueError into ModelLoadError


def test_load_modern_pickle_versions_load_it(tmp_path, monkeypatch):
    import xgboost as xgb

    X = np.random.default_rng(0).random((50, 3))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(X, label=X[:, 0] > 0.5), 3)
    (tmp_path / "xgboost-model").write_bytes(pickle.dumps(booster))
    assert serve.pickled_booster_kind(tmp_path / "xgboost-model") == "modern"
    for tag in ("1.0-1", "1.2-2", "1.7-1", None):
        monkeypatch.delenv("OPENSAGE_IMAGE_VERSION", raising=False)
        if tag:
            monkeypatch.setenv("OPENSAGE_IMAGE_VERSION", tag)
        model = serve.load(tmp_path)
        body, _ = serve.predict(model, b"0.9,0.1,0.2", "text/csv", None)
        assert float(body.decode().strip()) > 0.5


def test_load_pickle_of_other_object_refused_without_running_it(tmp_path):
    (tmp_path / "xgboost-model").write_bytes(pickle.dumps({"not": "a booster"}))
    assert serve.pickled_booster_kind(tmp_path / "xgboost-model") is None
    with pytest.raises(serve.ModelFormatError, match="not of an xgboost Booster"):
        serve.load_now(tmp_path, V("1.7-1"))

    class Exploit:
        def __reduce__(self):
            return (print, ("ran",))

    inspected = io.BytesIO(pickle.dumps(Exploit()))
    (tmp_path / "x").write_bytes(inspected.getvalue())
    assert serve.pickled_booster_kind(tmp_path / "x") is None  # inspection never calls what a pickle names


@pytest.mark.parametrize("tag", LEGACY)
def test_load_broken_model_legacy_versions_lazy_500_per_invocation(tmp_path, monkeypatch, tag):
    (tmp_path / "xgboost-model").write_bytes(b"this is not a model")
    model = _load(tmp_path, monkeypatch, tag)
    assert isinstance(model, serve.LazyModel)  # load() succeeds, so /ping answers 200
    for _ in range(2):  # every invocation tries again, as the container's load_model does
        with pytest.raises(serve.InferenceError) as e:
            serve.predict(model, ROWS, "text/csv", None)
        assert e.value.status == 500 and str(e.value).startswith("Unable to load model: ")


@pytest.mark.parametrize("tag", CURRENT + (None,))
def test_load_broken_model_current_versions_fails_at_load(tmp_path, monkeypatch, tag):
    (tmp_path / "xgboost-model").write_bytes(b"this is not a model")
    with pytest.raises(ValueError, match="cannot be loaded"):
        _load(tmp_path, monkeypatch, tag)


def test_load_versioned_takes_first_listed_file_when_no_xgboost_model(tmp_path, monkeypatch, model_dir):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a-model").write_bytes((model_dir / "xgboost-model").read_bytes())
    (tmp_path / "m" / "b-notes.txt").write_text("x")
    monkeypatch.setenv("SAGEMAKER_INFERENCE_ENSEMBLE", "false")
    for tag in ("1.0-1", "1.7-1"):
        model = _load(tmp_path / "m", monkeypatch, tag)
        assert serve.predict(model, ROWS, "text/csv", None)[0].count(b",") in (1, 0)
    with pytest.raises(FileNotFoundError):
        _load(tmp_path / "m", monkeypatch, None)  # the platform wants exactly one candidate


@pytest.mark.parametrize("tag", ["1.2-2", "1.7-1", "3.0-5"])
def test_load_ensemble_versions_stray_file_fails_the_model(tmp_path, monkeypatch, model_dir, tag):
    (model_dir / "README.txt").write_text("notes")
    with pytest.raises(ValueError, match="README.txt cannot be loaded"):
        _load(model_dir, monkeypatch, tag)
    monkeypatch.setenv("SAGEMAKER_INFERENCE_ENSEMBLE", "false")
    assert serve.predict(_load(model_dir, monkeypatch, tag), ROWS, "text/csv", None)[0].count(b"\n") == 2


def test_load_ensemble_kfold_models_averaged_and_voted(tmp_path, monkeypatch):
    import xgboost as xgb

    rng = np.random.default_rng(0)
    X = rng.random((120, 3)).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(np.float32)
    boosters = [xgb.train({"objective": "binary:logistic", "seed": i, "subsample": 0.7}, xgb.DMatrix(X, label=y), 3)
                for i in range(3)]
    for i, booster in enumerate(boosters):
        save_booster(booster, tmp_path / f"xgboost-model-{i}")
    body, _ = serve.predict(_load(tmp_path, monkeypatch, "1.7-1"), ROWS, "text/csv", None)
    expected = np.mean([b.predict(xgb.DMatrix(np.array([[0.9, 0.1, 0.2], [0.1, 0.5, 0.5]]))) for b in boosters], 0)
    np.testing.assert_allclose([float(v) for v in body.split()], expected, rtol=1e-6)
    hinge = tmp_path / "hinge"
    hinge.mkdir()
    for i in range(3):
        labels = y if i else 1 - y  # one model votes against the other two
        booster = xgb.train({"objective": "binary:hinge"}, xgb.DMatrix(X, label=labels), 30)
        save_booster(booster, hinge / f"xgboost-model-{i}")
    body, _ = serve.predict(_load(hinge, monkeypatch, "1.7-1"), ROWS, "text/csv", None)
    assert [float(v) for v in body.split()] == [1.0, 0.0]


# ------------------------------------------------------------------------------------------ metrics


def test_service_metric_definitions_per_version_as_sagemaker_fills_them():
    old = versions.service_metric_definitions("0.90-1-cpu-py3")
    new = versions.service_metric_definitions("1.7-1")
    assert len(old) == 34 and len(new) == 27
    assert versions.service_metric_definitions(None) == new
    assert {"Name": "train:rmse", "Regex": ".*\\[[0-9]+\\].*#011train-rmse:([-+]?[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"} in new
    assert any(d["Name"] == "validation:auc" for d in old) and not any(d["Name"] == "validation:auc" for d in new)
    assert [d["Name"] for d in new][:3] == ["train:mae", "train:gamma-nloglik", "validation:mae"]
    rx = re.compile(next(d["Regex"] for d in new if d["Name"] == "validation:rmse"))
    line = "[7]\ttrain-rmse:1.19876\tvalidation-rmse:2.31553".replace("\t", "#011")
    assert float(rx.match(line).group(1)) == 2.31553


# ------------------------------------------------------------------------------------------ selectable output


@pytest.mark.parametrize("tag", ["1.0-1", "1.2-1", "1.7-1"])
def test_predict_selectable_output_binary_json_and_csv(model_dir, monkeypatch, tag):
    model = _load(model_dir, monkeypatch, tag)
    monkeypatch.setenv("SAGEMAKER_INFERENCE_OUTPUT", "probabilities, predicted_label,predicted_score")
    body, content_type = serve.predict(model, ROWS, "text/csv", "application/json")
    assert content_type == "application/json"  # Accept honoured in this mode, even by 1.0-1 / 1.2-1
    rows = json.loads(body)["predictions"]
    assert list(rows[0]) == ["predicted_label", "probabilities", "predicted_score"]
    assert rows[0]["predicted_label"] == 1 and rows[1]["predicted_label"] == 0
    assert rows[0]["probabilities"][0] + rows[0]["probabilities"][1] == pytest.approx(1.0)
    assert body.count(b"NaN") == 2  # predicted_score is not a binary:logistic key
    body, content_type = serve.predict(model, ROWS, "text/csv", None)
    line = body.decode().split("\n")[0]
    assert content_type == "text/csv" and re.fullmatch(r'"\[[0-9.e-]+, [0-9.e-]+\]",1,nan', line)
    assert not body.endswith(b"\n")
    lines = serve.predict(model, ROWS, "text/csv", "application/jsonlines")[0].decode().splitlines()
    assert [json.loads(x)["predicted_label"] for x in lines] == [1, 0]


def test_predict_selectable_output_recordio_and_unsupported_objective(tmp_path, monkeypatch, model_dir):
    from opensage.algorithms import recordio

    model = _load(model_dir, monkeypatch, "1.7-1")
    monkeypatch.setenv("SAGEMAKER_INFERENCE_OUTPUT", "predicted_label,probability")
    body, _ = serve.predict(model, ROWS, "text/csv", "application/x-recordio-protobuf")
    records = recordio.read_records(body)
    assert [r.label["predicted_label"].float32_tensor.values[0] for r in records] == [1.0, 0.0]
    import xgboost as xgb

    X = np.random.default_rng(0).random((40, 3))
    booster = xgb.train({"objective": "reg:pseudohubererror"}, xgb.DMatrix(X, label=X[:, 0]), 2)
    save_booster(booster, tmp_path / "xgboost-model")
    with pytest.raises(serve.InferenceError) as e:
        serve.predict(_load(tmp_path, monkeypatch, "1.7-1"), ROWS, "text/csv", None)
    assert e.value.status == 500 and "unsupported for selectable inference" in str(e.value)


def test_train_early_stopping_from_13_saves_best_round_only(tmp_path, monkeypatch):
    import xgboost as xgb

    rounds = {}
    for tag in ("1.2-2", "1.7-1"):
        monkeypatch.setenv("OPENSAGE_IMAGE_VERSION", tag)
        paths = _ml_root(tmp_path / tag, {"num_round": "60", "objective": "binary:logistic", "eta": "0.9",
                                          "early_stopping_rounds": "2", "eval_metric": "logloss"})
        model = train.train(paths)
        booster = pickle.loads(model.read_bytes()) if tag == "1.2-2" else xgb.Booster(model_file=str(model))  # noqa: S301
        rounds[tag] = (booster.num_boosted_rounds(), int(booster.attr("best_iteration")))
    assert rounds["1.2-2"][0] > rounds["1.2-2"][1] + 1  # every round kept, best_iteration limits predictions
    assert rounds["1.7-1"][0] == rounds["1.7-1"][1] + 1  # truncated to the best round (save_best=True)
