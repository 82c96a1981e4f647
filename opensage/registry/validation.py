"""Model package validation: a package created with a ValidationSpecification is tested the way SageMaker does,
by running each validation profile's transform job on the package's containers (DG "Model package
validation"). The package is Pending, then InProgress while the job runs, then Completed, or Failed with the
job's reason in ``ModelPackageStatusDetails.ValidationStatuses[].FailureReason``.

This reconciler is the only writer of that progress. The transform job and the model it needs are created
through ``services["models"]`` / ``services["transform"]`` (never their rows); the model is deleted once the
job has ended. Progress lives in the package row (``_validation``), so a restarted control plane continues.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from opensage.api.dispatch import RequestContext
from opensage.errors import ServiceError
from opensage.runner.loop import ReconcileLoop
from opensage.services.base import Deps
from opensage.states import transition
from opensage.store.resources import ConcurrentUpdate, Resource

log = logging.getLogger(__name__)

PACKAGE = "model-package"
DONE = ("Completed", "Failed", "Stopped")


def validation_name(package_arn: str, profile: str) -> str:
    """A model / transform job name for one profile: SageMaker's name pattern, at most 63 characters."""
    digest = hashlib.sha256(f"{package_arn}|{profile}".encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "-" for c in package_arn.rsplit(":", 1)[-1].replace("model-package/", ""))
    stem = "-".join(p for p in stem.split("-") if p)[:36]
    return f"{stem}-validation-{digest}"


def containers_of(package: Resource) -> list[dict[str, Any]]:
    """The package's containers as a model's (Image, model data, environment)."""
    from opensage.services.registry import _model_container

    out = []
    for c in (package.request.get("InferenceSpecification") or {}).get("Containers") or []:
        container = _model_container(c)
        if c.get("Environment"):
            container["Environment"] = c["Environment"]
        out.append(container)
    return out


class ValidationReconciler(ReconcileLoop):
    def __init__(self, deps: Deps, services: dict[str, Any]) -> None:
        self.d = deps
        self.services = services
        self._init_loop("model-package-validation", busy_interval=1.0, idle_interval=30.0)

    def run_once(self) -> bool:
        busy = False
        for package in self.d.resources.in_status(PACKAGE, ("Pending", "InProgress")):
            busy = True
            try:
                if package.status == "Pending":
                    self._start(package)
                else:
                    self._check(package)
            except ConcurrentUpdate:
                pass  # updated meanwhile (an UpdateModelPackage): the next pass sees it
            except Exception:
                log.exception("model package %s: validation pass failed", package.arn)
        return busy

    def shutdown(self, stop_jobs: bool = True) -> None:
        self._stop_loop()  # the transform jobs belong to the transform reconciler

    def _profile(self, package: Resource) -> dict[str, Any]:
        return package.request["ValidationSpecification"]["ValidationProfiles"][0]

    def _start(self, package: Resource) -> None:
        ctx = RequestContext()
        profile = self._profile(package)
        name = validation_name(package.arn, profile["ProfileName"])
        spec = package.request["ValidationSpecification"]
        try:
            # Idempotent through the services' own API (a restart may repeat this step).
            if not _exists(lambda: self.services["models"].describe_model(ctx, {"ModelName": name})):
                self.services["models"].create_model(ctx, {
                    "ModelName": name, "ExecutionRoleArn": spec["ValidationRole"], "Containers": containers_of(package)})
            if not _exists(lambda: self.services["transform"].describe_transform_job(ctx, {"TransformJobName": name})):
                self.services["transform"].create_transform_job(
                    ctx, {**profile["TransformJobDefinition"], "TransformJobName": name, "ModelName": name})
        except ServiceError as e:
            package.state["_validation"] = {"model": name}  # _finish deletes the model if it was made
            self._finish(package, profile["ProfileName"], f"Validation profile {profile['ProfileName']} could not "
                                                          f"start its transform job: {e.message}")
            return
        transition(self.d.resources, package, "InProgress", self.d.clock.time(),
                   _validation={"job": name, "model": name},
                   ModelPackageStatusDetails=_details(package, "InProgress"))

    def _check(self, package: Resource) -> None:
        name = (package.state.get("_validation") or {}).get("job")
        profile = self._profile(package)["ProfileName"]
        try:
            job = self.services["transform"].describe_transform_job(RequestContext(), {"TransformJobName": name})
        except ServiceError as e:
            self._finish(package, profile, f"Validation profile {profile}: transform job {name}: {e.message}")
            return
        status = job["TransformJobStatus"]
        if status not in DONE:
            return
        reason = None if status == "Completed" else (
            f"Validation profile {profile}: transform job {name} {status.lower()}: "
            f"{job.get('FailureReason') or 'no reason given'}")
        self._finish(package, profile, reason)

    def _finish(self, package: Resource, profile: str, reason: str | None) -> None:
        model = (package.state.get("_validation") or {}).get("model")
        target = "Completed" if reason is None else "Failed"
        if package.status == "Pending":
            transition(self.d.resources, package, "InProgress", self.d.clock.time())
        transition(self.d.resources, package, target, self.d.clock.time(),
                   ModelPackageStatusDetails=_details(package, target, reason))
        if model:
            try:
                self.services["models"].delete_model(RequestContext(), {"ModelName": model})
            except ServiceError:
                pass  # already gone
        log.info("model package %s: validation %s%s", package.arn, target, f" ({reason})" if reason else "")


def _exists(describe: Any) -> bool:
    try:
        describe()
    except ServiceError:
        return False
    return True


def _details(package: Resource, status: str, reason: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"Name": package.state.get("ModelPackageName") or package.name, "Status": status}
    if reason:
        item["FailureReason"] = reason
    return {"ValidationStatuses": [item]}
