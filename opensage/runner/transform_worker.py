"""Batch-transform worker: one per transform instance, run by the executor as a job agent (JobSpec kind
``transform``; ``opensage.runner.agent`` hands such job dirs here).

It does what a SageMaker batch-transform instance does (contracts §7): stage the model, start one model
server (``serving.replicas``) with ``SAGEMAKER_BATCH=true``, wait for ``/ping``, read
``/execution-parameters``, then for each input object of this instance (S3Prefix / ManifestFile, split across
instances by key) split it by SplitType, pack requests by BatchStrategy and MaxPayloadInMB, keep up to
MaxConcurrentTransforms requests in flight on keep-alive connections (retrying per ModelClientConfig),
apply DataProcessing, assemble the answers in input order and write ``<S3OutputPath>/<relative key>.out``
once the whole object succeeded. A record the model refuses fails the job with a reason naming the file
and line (a failing multi-record request is bisected to find it).

Files (besides those of ``runner.jobspec``): ``<jobdir>/transform.json`` (written by the reconciler: the
request and the resolved model), ``logs/data-log.log`` (``<epoch-ms> <text>`` lines),
``logs/model-server.log`` and ``model_server.json`` (the server's pid/port, so the control plane can stop
a server whose worker was killed).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import signal
import tempfile
import threading
import time
import traceback
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from opensage.objects.base import ObjectNotFound, ObjectStore, split_s3_uri
from opensage.runner import channels
from opensage.runner.jobspec import ChannelSpec, JobResult, JobSpec
from opensage.runner.transform_data import (
    MB,
    Batch,
    DataError,
    DataProcessor,
    make_batches,
    split_records,
    stream_line_batches,
)
from opensage.serving.replicas import STARTUP_TIMEOUT_SECONDS, TOKEN_HEADER

TRANSFORM_FILE = "transform.json"
SERVER_FILE = "model_server.json"
DATA_LOG = "data-log.log"
SERVER_LOG = "model-server.log"
DEFAULT_TIMEOUT_SECONDS = 600
DEFAULT_RETRIES = 3
DEFAULTS = {"MaxConcurrentTransforms": 1, "BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6}
STRATEGIES = {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord"}
REASON_MAX = 1024
READ_CHUNK = 1 << 20  # bytes per read from the object store
READ_AHEAD_CHUNKS = 64  # at most this many READ_CHUNKs read ahead of the splitter per object
GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer
IN_PROCESS_ENV = "OPENSAGE_TRANSFORM_IN_PROCESS"  # "false" in the job's Environment: always a model server


class TransformFailed(Exception):
    """The job fails; the message is its FailureReason."""


class TransformStopped(Exception):
    pass


@dataclass
class Reply:
    status: int | None  # None: no HTTP answer (connection failure / timeout)
    body: bytes
    content_type: str | None = None

    def message(self) -> str:
        text = self.body.decode("utf-8", errors="replace").strip()
        first = text.splitlines()[0] if text else "(empty body)"
        return first[:400]


@dataclass
class Parameters:
    concurrency: int
    strategy: str
    max_payload_mb: int

    @property
    def limit(self) -> int:
        return self.max_payload_mb * MB


# ------------------------------------------------------------------------------------------- model client
class ModelClient:
    """POST /invocations on keep-alive HTTP/1.1 connections (one per thread), with retries."""

    def __init__(self, port: int, timeout: float, retries: int, content_type: str | None,
                 accept: str | None, log: Any, token: str | None = None) -> None:
        self.port, self.timeout, self.retries, self.log = port, timeout, retries, log
        self.headers = {"Content-Type": content_type or "application/octet-stream"}
        if accept:
            self.headers["Accept"] = accept
        if token:
            self.headers[TOKEN_HEADER] = token
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def invoke(self, body: bytes) -> Reply:
        reply = Reply(None, b"")
        for attempt in range(self.retries + 1):
            reply = self._send(body)
            if reply.status is not None and reply.status < 500:
                return reply
            if attempt < self.retries:
                self.log(f"invocation failed ({reply.status or 'no answer'}: {reply.message()}); retrying "
                         f"({attempt + 1}/{self.retries})")
                time.sleep(min(0.2 * 2 ** attempt, 2.0))
        return reply

    def _send(self, body: bytes) -> Reply:
        try:
            conn = self._conn()
            conn.request("POST", "/invocations", body=body, headers=self.headers)
            resp = conn.getresponse()
            reply = Reply(resp.status, resp.read(), resp.getheader("Content-Type"))
            if resp.getheader("Connection", "").lower() == "close":
                self._drop()
            return reply
        except TimeoutError:
            self._drop()
            return Reply(None, f"the model did not answer within {self.timeout:.0f} s "
                               "(ModelClientConfig.InvocationsTimeoutInSeconds)".encode())
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            return Reply(None, f"connection to the model server failed: {type(exc).__name__}: {exc}".encode())

    def close(self) -> None:
        self._drop()


class InProcessClient(ModelClient):
    """The model's handler called in this process: what ``POST /invocations`` would answer, without the
    HTTP hop (``serving.handlers.answer`` is the function the model server calls per request). Same
    retries; the InvocationsTimeoutInSeconds cannot cut a prediction short here (built-ins only)."""

    def __init__(self, handler: Any, max_body_bytes: int, timeout: float, retries: int,
                 content_type: str | None, accept: str | None, log: Any) -> None:
        super().__init__(0, timeout, retries, content_type, accept, log)
        self.handler, self.max_body_bytes = handler, max_body_bytes

    def _send(self, body: bytes) -> Reply:
        from opensage.serving.handlers import Request, answer

        if len(body) > self.max_body_bytes:  # the model server's 413 (its HTTP layer refuses the body)
            return Reply(413, (f"the request body ({len(body)} bytes) is larger than the limit "
                               f"({self.max_body_bytes} bytes; SAGEMAKER_MAX_PAYLOAD_IN_MB)").encode(), "text/plain")
        response = answer(self.handler, Request(body, self.headers["Content-Type"], self.headers.get("Accept")))
        return Reply(response.status, response.body, response.content_type)

    def close(self) -> None:
        pass


def describe_failure(reply: Reply) -> str:
    if reply.status is None:
        return reply.message()
    return f"model returned {reply.status}: {reply.message()}"


# ------------------------------------------------------------------------------------------- read-ahead
class ReadAhead:
    """An input object's bytes read by a thread of their own, up to ``READ_AHEAD_CHUNKS`` MB ahead of the
    consumer: the S3 read overlaps the model's start (the first object is opened before the model loads)
    and the splitting/predicting of the main thread. Iterate once; errors (ObjectNotFound included) are
    raised where the consumer reads."""

    _END = object()

    def __init__(self, store: ObjectStore, bucket: str, key: str) -> None:
        self.store, self.bucket, self.key = store, bucket, key
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=READ_AHEAD_CHUNKS)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._closed:
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            stream = self.store.open_read(self.bucket, self.key)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)
            return
        try:
            while not self._closed:
                chunk = stream.read(READ_CHUNK)
                if not chunk:
                    self._put(self._END)
                    return
                if not self._put(chunk):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)
        finally:
            stream.close()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(queue.Empty):
            while True:  # unblock a reader waiting on a full queue
                self._queue.get_nowait()


# ------------------------------------------------------------------------------------------- one object
class ObjectTask:
    """One input object: its records out, its assembled output in a temporary file, uploaded at the end."""

    def __init__(self, ref: channels.ObjectRef, output_uri: str, tmpdir: Path) -> None:
        self.ref = ref
        bucket, prefix = split_s3_uri(output_uri)
        prefix = prefix.rstrip("/")
        self.out_bucket = bucket
        self.out_key = f"{prefix}/{ref.rel}.out" if prefix else f"{ref.rel}.out"
        self.out_path = tmpdir / f"{abs(hash(ref.key))}-{time.time_ns()}.out"
        self.out: BinaryIO = open(self.out_path, "wb")  # noqa: SIM115 - closed in finish/discard
        self.records = 0

    @property
    def name(self) -> str:
        return self.ref.rel

    def finish(self, store: ObjectStore) -> str:
        self.out.close()
        try:
            store.put_file(self.out_bucket, self.out_key, self.out_path)
        except Exception as exc:  # noqa: BLE001 - worded for the user
            from opensage.runner.transfers import describe_s3_error

            uri = f"s3://{self.out_bucket}/{self.out_key}"
            raise TransformFailed(f"ClientError: could not write {uri}: {describe_s3_error(exc, uri)}. "
                                  "Check that the bucket of TransformOutput.S3OutputPath exists.") from exc
        finally:
            self.out_path.unlink(missing_ok=True)
        return f"s3://{self.out_bucket}/{self.out_key}"

    def discard(self) -> None:
        self.out.close()
        self.out_path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------- the worker
class Worker:
    def __init__(self, jobdir: Path) -> None:
        self.jobdir = jobdir
        self.stop_requested = False  # set from the SIGTERM handler: a plain flag, never an Event
        self.spec: JobSpec | None = None
        self.config: dict[str, Any] = {}
        self.request: dict[str, Any] = {}
        self.store: ObjectStore | None = None
        self.client: ModelClient | None = None
        (jobdir / "logs").mkdir(parents=True, exist_ok=True)
        self._log_file = open(jobdir / "logs" / DATA_LOG, "a", encoding="utf-8")  # noqa: SIM115
        self._log_lock = threading.Lock()
        self.records = 0
        self.outputs: list[str] = []
        self.inference_ids: Any = None  # transform_capture.InferenceIds with DataCaptureConfig.GenerateInferenceId
        self._prefetched: ReadAhead | None = None  # the first object, opened before the model loads

    # -- small pieces ---------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        with self._log_lock:
            for line in message.splitlines() or [""]:
                self._log_file.write(f"{int(time.time() * 1000)} [sagemaker logs]: {line}\n")
            self._log_file.flush()

    def request_stop(self, *_: Any) -> None:
        self.stop_requested = True

    def check(self) -> None:
        if self.stop_requested:
            raise TransformStopped()

    # -- run ------------------------------------------------------------------------------------------
    def run(self) -> JobResult:
        self.spec = spec = JobSpec.read(self.jobdir)
        self.config = json.loads((self.jobdir / TRANSFORM_FILE).read_text())
        self.request = self.config["request"]
        capture = self.request.get("DataCaptureConfig")
        start_time = float(self.config.get("start_time") or time.time())
        if capture and capture.get("GenerateInferenceId"):
            from opensage.runner.transform_capture import InferenceIds

            self.inference_ids = InferenceIds(start_time)
        from opensage.objects import open_store
        from opensage.runner.transfers import RetryingStore

        # Inputs and outputs wait out a restart of the platform's object store.
        self.store = RetryingStore(open_store(spec.object_store))
        objects = self._plan()
        if not objects:
            self.log("No input objects for this instance (more instances than objects).")
            return JobResult(exit_code=0)
        # The first object streams in while the model server starts (or the model loads here).
        self._prefetched = ReadAhead(self.store, objects[0].bucket, objects[0].key)
        try:
            plan = self._plan_server()
            if self._in_process(plan):
                self._run_in_process(objects, plan)
            else:
                self._run_with_server(objects, plan)
        finally:
            if self._prefetched is not None:
                self._prefetched.close()
        self.log(f"Transformed {self.records} record(s) in {len(objects)} object(s).")
        if capture:
            self._capture(capture, start_time, objects)
        return JobResult(exit_code=0, extra={"records": self.records, "outputs": self.outputs})

    def _run_with_server(self, objects: list[channels.ObjectRef], plan: Any) -> None:
        """Through a model server process, as SageMaker does (user code, pipelines, image environments)."""
        assert self.spec is not None
        from opensage.serving.replicas import Replica, ReplicaManager, new_token

        manager = ReplicaManager()
        # OMP_NUM_THREADS=1 unless the model or the job sets it: the server's prediction thread shares the
        # instance with the object store and this worker; OpenMP's spinning threads cost ~35% more CPU for the
        # same wall time (benchmarks/RESULTS.md, batch transform).
        replica = manager.start(plan.model_dir, plan.kind,
                                {"OMP_NUM_THREADS": "1", **plan.env, **self.spec.environment},
                                self.jobdir / "logs" / SERVER_LOG,
                                # Like an endpoint's: another local user must not reach it on loopback.
                                token=new_token())
        (self.jobdir / SERVER_FILE).write_text(json.dumps(replica.to_state()))
        try:
            self._wait_ready(manager, replica)
            params = self._parameters(self._served_parameters(replica))
            tin, tout, mcc = self._io()
            self.client = ModelClient(
                replica.port, float(mcc.get("InvocationsTimeoutInSeconds") or DEFAULT_TIMEOUT_SECONDS),
                int(mcc.get("InvocationsMaxRetries", DEFAULT_RETRIES)), tin.get("ContentType"), tout.get("Accept"),
                self.log, replica.token)
            self._transform(objects, params)
        finally:
            if self.client is not None:
                self.client.close()
            manager.stop(Replica.from_state(replica.to_state()), grace=10.0)

    def _in_process(self, plan: Any) -> bool:
        """Predict in this process: a built-in algorithm served by the platform's own interpreter, one
        model, one server worker. Everything else (user code, inference pipelines, multi-model, an image's
        own environment) goes through a model server. ``OPENSAGE_TRANSFORM_IN_PROCESS=false`` in the job's
        Environment forces the model server (benchmarks and the equivalence test compare both)."""
        assert self.spec is not None
        from opensage import images
        from opensage.serving.plan import MULTI_MODEL_ENV, SERVING_IMAGE_ENV

        env = {**plan.env, **self.spec.environment}
        if env.get(IN_PROCESS_ENV, "true").lower() in ("false", "0", "no"):
            return False
        if not plan.kind.startswith("builtin-") or env.get(MULTI_MODEL_ENV):
            return False
        if (env.get("SAGEMAKER_MODEL_SERVER_WORKERS") or "1").strip() not in ("", "1"):
            return False
        return images.environment_for_image(plan.env.get(SERVING_IMAGE_ENV), "builtin", plan.model_dir) is None

    def _run_in_process(self, objects: list[channels.ObjectRef], plan: Any) -> None:
        """The model server's handler, built and loaded as the server would (``model_server.build_handler``
        under the server's environment), called per mini-batch without the HTTP hop."""
        assert self.spec is not None
        import os

        from opensage.serving import model_server
        from opensage.serving.plan import SERVING_IMAGE_ENV, SERVING_IMAGE_KIND_ENV

        env = {"OMP_NUM_THREADS": "1", **plan.env, **self.spec.environment}
        for key in (SERVING_IMAGE_ENV, SERVING_IMAGE_KIND_ENV):
            env.pop(key, None)
        os.environ.update(env)  # this process is the job's: the handler reads the server's environment
        server_log = open(self.jobdir / "logs" / SERVER_LOG, "a", encoding="utf-8")  # noqa: SIM115
        try:
            config = model_server.parse_args(["--model-dir", str(plan.model_dir), "--kind", plan.kind])
            handler = model_server.build_handler(config)
            started = time.monotonic()
            try:
                handler.load()
            except Exception as exc:  # noqa: BLE001 - worded for the user, as the server's exit would be
                server_log.write(f"could not load the model: {exc}\n{traceback.format_exc()}")
                raise TransformFailed(f"AlgorithmError: could not load the model: {exc}") from exc
            server_log.write(f"[in-process] model loaded in {time.monotonic() - started:.2f} s; predicting in "
                             "the transform worker (no model server process)\n")
            server_log.flush()
            self.log(f"Model loaded in this process after {time.monotonic() - started:.2f} s.")
            params = self._parameters(json.loads(model_server._execution_parameters(builtin=True)))
            tin, tout, mcc = self._io()
            self.client = InProcessClient(
                handler, config.max_body_bytes,
                float(mcc.get("InvocationsTimeoutInSeconds") or DEFAULT_TIMEOUT_SECONDS),
                int(mcc.get("InvocationsMaxRetries", DEFAULT_RETRIES)), tin.get("ContentType"), tout.get("Accept"),
                self.log)
            self._transform(objects, params)
        finally:
            server_log.close()

    def _io(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        return (self.request["TransformInput"], self.request["TransformOutput"],
                self.request.get("ModelClientConfig") or {})

    def _capture(self, capture: dict[str, Any], start_time: float, objects: list[channels.ObjectRef]) -> None:
        """DataCaptureConfig: manifests of this instance's inputs and outputs under DestinationS3Uri."""
        assert self.store is not None
        from opensage.runner.transform_capture import write_manifests

        try:
            written = write_manifests(self.store, capture, start_time,
                                      [f"s3://{r.bucket}/{r.key}" for r in objects], self.outputs)
        except Exception as exc:  # noqa: BLE001 - worded for the user
            from opensage.runner.transfers import describe_s3_error

            uri = capture["DestinationS3Uri"]
            raise TransformFailed(f"ClientError: could not write the captured data to {uri}: "
                                  f"{describe_s3_error(exc, uri)}. Check that the bucket of "
                                  "DataCaptureConfig.DestinationS3Uri exists.") from exc
        self.log(f"Data capture: wrote {', '.join(written)}.")

    def _plan(self) -> list[channels.ObjectRef]:
        assert self.spec is not None and self.store is not None
        source = self.request["TransformInput"]["DataSource"]["S3DataSource"]
        channel = ChannelSpec(name="TransformInput", s3_uri=source["S3Uri"],
                              s3_data_type=source.get("S3DataType") or "S3Prefix", distribution="ShardedByS3Key")
        try:
            plan = channels.plan_channel(self.store, channel, self.spec.host_index, self.spec.host_count)
        except channels.ChannelError as exc:
            raise TransformFailed(str(exc)) from exc
        return plan.objects

    def _plan_server(self) -> Any:
        """The model server to start (serving/plan.py): one container's, or an inference pipeline's front."""
        assert self.spec is not None
        from opensage.serving.plan import plan_model_server

        root = Path(self.config.get("plans_root") or self.jobdir / "plans")
        try:
            return plan_model_server(self.config["model"], self._stage_model, root,
                                     self.spec.object_store.endpoint_url)
        except ValueError as exc:  # an image that cannot be served (the model changed since Create)
            raise TransformFailed(f"ClientError: model {self.request['ModelName']}: {exc}") from exc

    def _stage_model(self, url: str | None) -> Path:
        assert self.store is not None
        from opensage.serving.staging import stage_model

        what = f"ModelDataUrl of model {self.request['ModelName']}"
        try:
            return stage_model(self.store, Path(self.config["models_root"]), url)
        except ValueError as exc:  # a malformed URL, an unsafe or damaged archive: the message says which
            raise TransformFailed(f"ClientError: could not unpack the model artifact {url} ({what}): {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - missing object, store errors: worded for the user
            from opensage.runner.transfers import describe_s3_error

            raise TransformFailed(f"ClientError: could not download the model artifact ({what}): "
                                  f"{describe_s3_error(exc, url or '')}.") from exc

    def _wait_ready(self, manager: Any, replica: Any) -> None:
        started = time.monotonic()
        while not manager.healthy(replica):
            self.check()
            if not manager.running(replica):
                how = manager.exit_status(replica)
                raise TransformFailed(f"AlgorithmError: the model server exited{f' ({how})' if how else ''} "
                                      "before answering /ping. Last log lines:\n" + manager.log_tail(replica))
            if time.monotonic() - started > STARTUP_TIMEOUT_SECONDS:
                raise TransformFailed(f"AlgorithmError: the model server did not answer /ping within "
                                      f"{STARTUP_TIMEOUT_SECONDS:.0f} s.")
            time.sleep(0.05)
        self.log(f"Model server is ready after {time.monotonic() - started:.2f} s.")

    @staticmethod
    def _served_parameters(replica: Any) -> dict[str, Any]:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", replica.port, timeout=10)
            conn.request("GET", "/execution-parameters",
                         headers={TOKEN_HEADER: replica.token} if replica.token else {})
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            return json.loads(body) if resp.status == 200 else {}
        except (OSError, http.client.HTTPException, ValueError):
            return {}

    def _parameters(self, served: dict[str, Any]) -> Parameters:
        """The job's values; else the server's /execution-parameters; else SageMaker's defaults."""
        if served.get("BatchStrategy"):
            served["BatchStrategy"] = STRATEGIES.get(str(served["BatchStrategy"]).upper(), "MultiRecord")

        def pick(key: str) -> Any:
            value = self.request.get(key)
            if value is None or (key == "MaxConcurrentTransforms" and value == 0):  # 0 means unset
                value = served.get(key)
            return DEFAULTS[key] if value is None else value

        params = Parameters(max(1, int(pick("MaxConcurrentTransforms"))), pick("BatchStrategy"),
                            int(pick("MaxPayloadInMB")))
        self.log(f"MaxConcurrentTransforms={params.concurrency}, MaxPayloadInMB={params.max_payload_mb}, "
                 f"BatchStrategy={params.strategy}")
        return params

    # -- the data path --------------------------------------------------------------------------------
    def _transform(self, objects: list[channels.ObjectRef], params: Parameters) -> None:
        assert self.store is not None and self.client is not None
        tin, tout, _ = self._io()
        processor = DataProcessor(self.request.get("DataProcessing"), tin.get("ContentType"))
        split_type = tin.get("SplitType") or "None"
        line_end = (tout.get("AssembleWith") or "None") == "Line"
        window = params.concurrency * 2
        pending: deque[tuple[ObjectTask, Batch | None, Future[Reply] | None]] = deque()
        with tempfile.TemporaryDirectory(prefix="opensage-transform-") as tmp, \
                ThreadPoolExecutor(params.concurrency, thread_name_prefix="invoke") as pool:
            try:
                for ref in objects:
                    self.check()
                    task = ObjectTask(ref, tout["S3OutputPath"], Path(tmp))
                    for batch in self._batches(task, split_type, params, processor):
                        self.check()
                        pending.append((task, batch, pool.submit(self.client.invoke, batch.body)))
                        while len(pending) > window:
                            self._consume(*pending.popleft(), processor, split_type, line_end)
                    pending.append((task, None, None))
                while pending:
                    self.check()
                    self._consume(*pending.popleft(), processor, split_type, line_end)
            finally:
                for task, _batch, future in pending:
                    if future is not None:
                        future.cancel()
                    if not task.out.closed:
                        task.discard()

    def _chunks(self, task: ObjectTask) -> Iterator[bytes]:
        """The object's bytes as they arrive from the store (gunzipped on the fly for CompressionType Gzip);
        logs its size once it has been read in full."""
        assert self.store is not None
        ref = task.ref
        reader, self._prefetched = self._prefetched, None
        if reader is None or (reader.bucket, reader.key) != (ref.bucket, ref.key):
            if reader is not None:
                reader.close()
            reader = ReadAhead(self.store, ref.bucket, ref.key)
        size = 0
        try:
            raw = iter(reader)
            gzipped = (self.request["TransformInput"].get("CompressionType") or "None") == "Gzip"
            for chunk in _gunzip(raw, f"s3://{ref.bucket}/{ref.key}") if gzipped else raw:
                size += len(chunk)
                yield chunk
        except ObjectNotFound as exc:
            raise TransformFailed(f"ClientError: input object s3://{ref.bucket}/{ref.key} does not exist.") from exc
        finally:
            reader.close()
        self.log(f"s3://{ref.bucket}/{ref.key}: {size} bytes")

    def _batches(self, task: ObjectTask, split_type: str, params: Parameters,
                 processor: DataProcessor) -> Iterator[Batch]:
        chunks = self._chunks(task)
        try:
            if split_type == "Line" and params.strategy == "MultiRecord" and not processor.per_record_input:
                # Requests start with the first MaxPayloadInMB of the object, while the rest downloads.
                yield from stream_line_batches(chunks, params.limit)
                return
            records = split_records(b"".join(chunks), split_type)
            triples: Iterator[tuple[int, bytes, Any]] = (
                _filtered(task, records, processor) if processor.per_record_input
                else ((n, r, None) for n, r in records))
            yield from make_batches(triples, split_type, params.strategy, params.limit, sources=processor.join)
        except DataError as exc:
            raise TransformFailed(f"Bad input in {task.name}: {exc}") from exc
        finally:
            chunks.close()

    def _consume(self, task: ObjectTask, batch: Batch | None, future: Future[Reply] | None,
                 processor: DataProcessor, split_type: str, line_end: bool) -> None:
        assert self.store is not None
        if batch is None or future is None:
            uri = task.finish(self.store)
            self.outputs.append(uri)
            self.log(f"Wrote {uri} ({task.records} record(s)).")
            return
        reply = future.result()
        if reply.status != 200:
            raise TransformFailed(self._locate(task, batch, reply, split_type))
        if processor.per_record_output:
            try:
                written = processor.outputs(batch, reply.body, reply.content_type)
            except DataError as exc:
                raise TransformFailed(f"Bad output for {task.name} line {batch.label()}: {exc}") from exc
            sep = b"\n" if line_end or self.inference_ids else b""
            if self.inference_ids:
                written = [self.inference_ids.record(w) for w in written]
            task.out.write(b"".join(w + sep for w in written))
        elif self.inference_ids:
            task.out.write(self.inference_ids.body(reply.body))
        else:
            task.out.write(reply.body)
            if line_end and not reply.body.endswith(b"\n"):
                task.out.write(b"\n")
        task.records += batch.count
        self.records += batch.count

    def _locate(self, task: ObjectTask, batch: Batch, reply: Reply, split_type: str) -> str:
        """Find the first record the model refuses (bisecting a multi-record request) for the reason."""
        noun = "line" if split_type in ("Line", "None") else "record"
        if batch.count <= 1 or split_type == "None" or self.client is None:
            return f"Bad input in {task.name} {noun} {batch.label()}: {describe_failure(reply)}"
        records = _batch_records(batch, split_type)
        sep = b"\n" if split_type == "Line" else b""
        budget = 2 * max(1, len(records)).bit_length() + 2
        while len(records) > 1 and budget > 0:
            half = records[:len(records) // 2]
            budget -= 1
            probe = self.client.invoke(b"".join(r + sep for _, r in half))
            if probe.status != 200:
                records, reply = half, probe
            else:
                records = records[len(records) // 2:]
        if len(records) == 1:
            probe = self.client.invoke(records[0][1] + sep)
            if probe.status != 200:
                return f"Bad input in {task.name} {noun} {records[0][0]}: {describe_failure(probe)}"
        return f"Bad input in {task.name} {noun} {batch.label()}: {describe_failure(reply)}"


def _gunzip(chunks: Iterator[bytes], uri: str) -> Iterator[bytes]:
    """Decompress a gzip stream chunk by chunk (several concatenated members allowed, as gzip.decompress)."""
    decomp, fed = zlib.decompressobj(GZIP_WBITS), False
    try:
        for chunk in chunks:
            while chunk:
                fed = True
                out = decomp.decompress(chunk)
                if out:
                    yield out
                if not decomp.eof:
                    break
                chunk, decomp, fed = decomp.unused_data, zlib.decompressobj(GZIP_WBITS), False
        if fed and not decomp.eof:
            raise EOFError("the gzip stream ends before its end-of-stream marker (truncated)")
    except (zlib.error, EOFError) as exc:
        raise TransformFailed(f"ClientError: input object {uri} is not gzip data (TransformInput.CompressionType "
                              f"is Gzip): {exc}") from exc


def _filtered(task: ObjectTask, records: Iterator[tuple[int, bytes]],
              processor: DataProcessor) -> Iterator[tuple[int, bytes, Any]]:
    for number, record in records:
        try:
            sent, parsed = processor.filter_input(record)
        except DataError as exc:
            raise TransformFailed(f"Bad input in {task.name} line {number}: {exc}") from exc
        yield number, sent, parsed


def _batch_records(batch: Batch, split_type: str) -> list[tuple[int, bytes]]:
    """(number, record) of a batch's body, numbered as in the input object."""
    if split_type == "Line":
        if batch.numbers:
            lines = [ln for ln in batch.body.split(b"\n") if ln.strip()]
            return list(zip(batch.numbers, lines, strict=False))
        return [(batch.first + i, ln) for i, ln in enumerate(batch.body.split(b"\n")) if ln.strip()]
    parts = [r for _, r in split_records(batch.body, split_type)]
    numbers = batch.numbers or list(range(batch.first, batch.first + len(parts)))
    return list(zip(numbers, parts, strict=False))


# ------------------------------------------------------------------------------------------- entry point
def run_worker(jobdir: Path) -> JobResult:
    """Run the transform instance in ``jobdir`` and write ``result.json``; never raises."""
    worker = Worker(jobdir)
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    try:
        result = worker.run()
    except TransformStopped:
        worker.log("Stopped.")
        result = JobResult(exit_code=None, stopped=True)
    except TransformFailed as exc:
        worker.log(f"Failed: {exc}")
        result = JobResult(exit_code=1, failure_reason=str(exc)[:REASON_MAX])
    except Exception as exc:  # noqa: BLE001 - the worker must always leave a result
        traceback.print_exc()
        result = JobResult(exit_code=None, failure_reason=(
            f"InternalServerError: the transform worker failed: {type(exc).__name__}: {exc}")[:REASON_MAX])
    if worker.stop_requested and result.failure_reason is None:
        result.stopped = True
    result.write(jobdir)
    return result
