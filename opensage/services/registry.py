"""The model registry: model package groups and (versioned or unversioned) model packages.

Rows: one ``model-package-group`` per group (its version counter and resource policy in the row's state) and
one ``model-package`` per package, named ``<group>/<version>`` (versioned, ``parent_arn`` = the group's ARN)
or ``<name>`` (unversioned). ARNs are lower-cased as SageMaker writes them
(``model-package/abalonemodelpackagegroupname/1`` for the group AbaloneModelPackageGroupName), so lookups go
by ARN and names are unique regardless of case.

There is no work to reconcile: a package is validated when it is created (InferenceSpecification checks, the
image resolvable by images.py) and is ``Completed`` at once, which is what the SDK's ``wait_for_model_package``
waits for. ``resolve_containers`` is what CreateModel calls for ``ModelPackageName`` containers
(services/models.py), so an approved package deploys and batch-transforms.

Wording: a missing group is ``ModelPackageGroup <arn> does not exist.`` and a duplicate ``Model Package Group
already exists: <arn>`` (both ValidationException; clients match "does not exist" / "already exists").
"""

from __future__ import annotations

import json
from typing import Any

from opensage.arns import with_lower_case_name
from opensage.errors import ConflictException, ValidationException
from opensage.registry import search
from opensage.registry.checks import (
    MAX_ADDITIONAL_SPECS,
    check_additional,
    check_create,
    check_inference_specification,
    check_source_uri,
    merge_customer_metadata,
)
from opensage.registry.paging import page
from opensage.services.base import Deps, epoch, list_query
from opensage.store.resources import AlreadyExists, ConcurrentUpdate, ListQuery, Resource

GROUP = "model-package-group"
PACKAGE = "model-package"
COMPLETED = "Completed"
PENDING_APPROVAL = "PendingManualApproval"
# Members of CreateModelPackage that are not echoed as given (kept in state, or not part of Describe).
_NOT_ECHOED = ("Tags", "ClientToken", "ModelApprovalStatus", "CustomerMetadataProperties")


def _lower_arn(arn: str) -> str:
    return with_lower_case_name(arn)


def _name_part(value: str, resource_type: str) -> str:
    """``arn:...:<resource_type>/<rest>`` -> ``<rest>``; a plain name is returned as is."""
    if value.startswith("arn:"):
        _, _, resource = value.partition(":" + resource_type + "/")
        if not resource:
            raise ValidationException(f"'{value}' is not a {resource_type} ARN.")
        return resource
    return value


class RegistryService:
    def __init__(self, deps: Deps, services: dict[str, Any] | None = None) -> None:
        self.d = deps
        self.services = services if services is not None else {}  # other services, looked up when used

    # -- helpers -------------------------------------------------------------------------------------
    def _user(self, ctx) -> dict[str, Any]:
        """UserContext for CreatedBy / LastModifiedBy: the IAM identity STS GetCallerIdentity reports."""
        account = self.d.settings.account
        key = getattr(ctx, "access_key", None) or "opensage"
        return {"IamIdentity": {"Arn": f"arn:aws:iam::{account}:user/opensage", "PrincipalId": key}}

    def group_arn(self, name_or_arn: str) -> str:
        return self.d.arns.sagemaker(GROUP, _name_part(name_or_arn, GROUP).lower())

    def _group(self, name_or_arn: str) -> Resource:
        arn = self.group_arn(name_or_arn)
        res = self.d.resources.get_by_arn(arn)
        if res is None or res.kind != GROUP:
            raise ValidationException(f"ModelPackageGroup {arn} does not exist.")
        return res

    def package_arn(self, name_or_arn: str) -> str:
        if name_or_arn.startswith("arn:"):
            return _lower_arn(name_or_arn)
        return self.d.arns.sagemaker(PACKAGE, name_or_arn.lower())

    def get_package(self, name_or_arn: str) -> Resource:
        """The package row a ModelPackageName (name, ``group/version`` or ARN) names; ValidationException."""
        arn = self.package_arn(name_or_arn)
        res = self.d.resources.get_by_arn(arn)
        if res is None or res.kind != PACKAGE:
            hint = ""
            if "/" not in name_or_arn and self.d.resources.get_by_arn(self.group_arn(name_or_arn)) is not None:
                hint = (f" '{name_or_arn}' is a model package group: name one of its versions by its ARN or as "
                        f"'{name_or_arn}/<version>'.")
            raise ValidationException(f"ModelPackage {arn} does not exist.{hint}")
        return res

    def _versions(self, group_arn: str, limit: int = 1) -> list[Resource]:
        items, _ = self.d.resources.list(PACKAGE, ListQuery(parent_arn=group_arn, limit=limit))
        return items

    # -- groups --------------------------------------------------------------------------------------
    def create_model_package_group(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["ModelPackageGroupName"]
        arn = self.group_arn(name)
        from opensage.store.tags import check_user_tags

        check_user_tags(params.get("Tags") or [])
        now = self.d.clock.time()
        request = {k: v for k, v in params.items() if k != "Tags"}
        state = {"CreatedBy": self._user(ctx), "_next_version": 1}
        if self.d.resources.get_by_arn(arn) is not None:
            raise ValidationException(f"Model Package Group already exists: {arn}")
        try:
            self.d.resources.create(Resource(GROUP, name, arn, COMPLETED, now, now, request, state))
        except AlreadyExists:
            raise ValidationException(f"Model Package Group already exists: {arn}") from None
        self.d.tags.put(arn, params.get("Tags") or [])
        return {"ModelPackageGroupArn": arn}

    def describe_model_package_group(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._group(params["ModelPackageGroupName"])
        out = dict(res.request)
        out.update({"ModelPackageGroupName": res.name, "ModelPackageGroupArn": res.arn,
                    "CreationTime": res.creation_time, "CreatedBy": res.state.get("CreatedBy") or {},
                    "ModelPackageGroupStatus": res.status})
        return out

    def list_model_package_groups(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("CrossAccountFilterOption") == "CrossAccount":
            return {"ModelPackageGroupSummaryList": []}  # one account here: nothing is shared with it
        items, token = self.d.resources.list(GROUP, list_query(params))
        out: dict[str, Any] = {"ModelPackageGroupSummaryList": [_group_summary(r) for r in items]}
        if token:
            out["NextToken"] = token
        return out

    def delete_model_package_group(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._group(params["ModelPackageGroupName"])
        if self._versions(res.arn):
            raise ConflictException(
                f"Model Package Group {res.arn} cannot be deleted because it contains model packages. Delete "
                f"its model package versions first (DeleteModelPackage).")
        self.d.resources.delete(GROUP, res.name)
        self.d.tags.drop_all(res.arn)
        return {}

    def put_model_package_group_policy(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        policy = params["ResourcePolicy"]
        try:
            document = json.loads(policy)
        except (ValueError, RecursionError):  # a deeply nested document raises RecursionError
            raise ValidationException("ResourcePolicy is not valid JSON.") from None
        if not isinstance(document, dict) or not document.get("Statement"):
            raise ValidationException("ResourcePolicy must be a JSON policy document with a Statement.")
        res = self._update_group(params["ModelPackageGroupName"], {"_policy": policy})
        return {"ModelPackageGroupArn": res.arn}

    def get_model_package_group_policy(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._group(params["ModelPackageGroupName"])
        if not res.state.get("_policy"):
            raise ValidationException(f"Cannot find resource policy for ModelPackageGroup {res.arn}.")
        return {"ResourcePolicy": res.state["_policy"]}

    def delete_model_package_group_policy(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._group(params["ModelPackageGroupName"])
        if not res.state.get("_policy"):
            raise ValidationException(f"Cannot find resource policy for ModelPackageGroup {res.arn}.")
        self._update_group(res.name, {"_policy": None})
        return {}

    def _update_group(self, name_or_arn: str, changes: dict[str, Any]) -> Resource:
        for _ in range(10):
            res = self._group(name_or_arn)
            res.state.update(changes)
            try:
                return self.d.resources.save(res, self.d.clock.time())
            except ConcurrentUpdate:
                continue
        raise ConflictException(f"ModelPackageGroup {name_or_arn} is being updated; retry.")

    def _next_version(self, name_or_arn: str) -> tuple[Resource, int]:
        """Take the group's next version number (compare-and-set: two concurrent registrations never share
        one; a deleted version's number is not reused)."""
        for _ in range(20):
            res = self._group(name_or_arn)
            version = int(res.state.get("_next_version") or 1)
            res.state["_next_version"] = version + 1
            try:
                return self.d.resources.save(res, self.d.clock.time()), version
            except ConcurrentUpdate:
                continue
        raise ConflictException(f"ModelPackageGroup {name_or_arn} is being updated by other requests; retry.")

    # -- packages ------------------------------------------------------------------------------------
    def create_model_package(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        if getattr(ctx, "principal", "http") is None:
            # In-process callers (a pipeline's RegisterModel step with resolved parameters) skip the API's
            # shape validation; apply it here so a bad value fails the same way it would over the wire.
            from opensage.api.spec import operation_model
            from opensage.api.validate import validate

            validate(params, operation_model("sagemaker", "CreateModelPackage").input_shape)
        check_create(params)
        if params.get("SourceUri") and not params.get("InferenceSpecification"):
            params = {**params, **self._from_source(ctx, params["SourceUri"])}
        from opensage.store.tags import check_user_tags

        check_user_tags(params.get("Tags") or [])
        group_param = params.get("ModelPackageGroupName")
        token = params.get("ClientToken")
        if group_param:
            if getattr(ctx, "principal", "http") is None and not group_param.startswith("arn:"):
                self._ensure_group(ctx, group_param)
            group = self._group(group_param)
            if token and (same := self._by_client_token(group.arn, token)) is not None:
                return {"ModelPackageArn": same.arn}
            group, version = self._next_version(group.arn)
            row_name, display = f"{group.name}/{version}", group.name
            arn = self.d.arns.sagemaker(PACKAGE, f"{group.name.lower()}/{version}")
        else:
            display = row_name = params["ModelPackageName"]
            arn = self.d.arns.sagemaker(PACKAGE, row_name.lower())
            existing = self.d.resources.get_by_arn(arn)
            if existing is not None:
                if token and existing.state.get("_client_token") == token:
                    return {"ModelPackageArn": existing.arn}
                raise ValidationException(f"ModelPackage already exists: {arn}")
        now = self.d.clock.time()
        request = {k: v for k, v in params.items() if k not in _NOT_ECHOED}
        request.pop("ModelPackageName", None)
        request.pop("ModelPackageGroupName", None)
        skipped = params.get("SkipModelValidation") == "All"
        # With a ValidationSpecification the package waits for its transform job (registry/validation.py).
        validate_later = bool(params.get("ValidationSpecification")) and not skipped
        status = "Pending" if validate_later else COMPLETED
        state: dict[str, Any] = {
            "ModelPackageName": display,
            "CreatedBy": self._user(ctx),
            "ModelPackageStatusDetails": {"ValidationStatuses": [
                {"Name": display, "Status": "NotStarted" if skipped or validate_later else COMPLETED}]},
            "_client_token": token,
        }
        if group_param:
            state.update({"ModelPackageGroupName": group.name, "ModelPackageVersion": version,
                          "ModelApprovalStatus": params.get("ModelApprovalStatus") or PENDING_APPROVAL})
        if params.get("CustomerMetadataProperties"):
            state["CustomerMetadataProperties"] = params["CustomerMetadataProperties"]
        res = Resource(PACKAGE, row_name, arn, status, now, now, request, state,
                       parent_arn=group.arn if group_param else None)
        try:
            self.d.resources.create(res)
        except AlreadyExists:
            raise ValidationException(f"ModelPackage already exists: {arn}") from None
        self.d.tags.put(arn, params.get("Tags") or [])
        if validate_later:
            self.d.wake(PACKAGE)
        return {"ModelPackageArn": arn}

    def _from_source(self, ctx, uri: str) -> dict[str, Any]:
        """SourceUri naming a model package or a model fills the InferenceSpecification in (SageMaker's
        auto-population); any other URI is only recorded."""
        from opensage.arns import parse_sagemaker_arn

        parsed = parse_sagemaker_arn(uri)
        if parsed is None or parsed[0] not in ("model-package", "model"):
            return {}
        if parsed[0] == "model-package":
            spec = self.get_package(uri).request.get("InferenceSpecification")
            return {"InferenceSpecification": spec} if spec else {}
        model = self.services["models"].describe_model(ctx, {"ModelName": parsed[1]})
        containers = model.get("Containers") or [model["PrimaryContainer"]]
        keep = ("ContainerHostname", "Image", "ModelDataUrl", "ModelDataSource", "Environment")
        return {"InferenceSpecification": {"Containers": [{k: c[k] for k in keep if c.get(k)} for c in containers]}}

    def _ensure_group(self, ctx, name: str) -> None:
        """A pipeline's RegisterModel step registers into its group, creating it on first use as SageMaker
        Pipelines does (the public API refuses a missing group). Calls from inside the platform have no
        principal; requests from clients always have one."""
        if self.d.resources.get_by_arn(self.group_arn(name)) is None:
            try:
                self.create_model_package_group(ctx, {"ModelPackageGroupName": name})
            except ValidationException:
                pass  # created meanwhile by another step

    def _by_client_token(self, group_arn: str, token: str) -> Resource | None:
        for res in self._versions(group_arn, limit=10_000):
            if res.state.get("_client_token") == token:
                return res
        return None

    def describe_model_package(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return describe_package(self.get_package(params["ModelPackageName"]))

    def batch_describe_model_package(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for arn in params["ModelPackageArnList"]:
            try:
                res = self.get_package(arn)
            except ValidationException as e:
                errors[arn] = {"ErrorCode": e.code, "ErrorResponse": e.message}
                continue
            if res.parent_arn is None or not res.request.get("InferenceSpecification"):
                errors[arn] = {"ErrorCode": "ValidationException", "ErrorResponse":
                               f"ModelPackage {res.arn} is not a versioned model package with an "
                               "InferenceSpecification."}
                continue
            d = describe_package(res)
            found[arn] = {k: d[k] for k in (
                "ModelPackageGroupName", "ModelPackageVersion", "ModelPackageArn", "ModelPackageDescription",
                "CreationTime", "InferenceSpecification", "ModelPackageStatus", "ModelApprovalStatus",
                "ModelPackageRegistrationType") if k in d}
        out: dict[str, Any] = {"ModelPackageSummaries": found}
        if errors:
            out["BatchDescribeModelPackageErrorMap"] = errors
        return out

    def update_model_package(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        for _ in range(10):
            res = self.get_package(params["ModelPackageArn"])
            if res.parent_arn is None:
                raise ValidationException(f"UpdateModelPackage updates versioned model packages; {res.arn} is an "
                                          "unversioned model package.")
            self._apply_update(ctx, res, params)
            try:
                self.d.resources.save(res, self.d.clock.time())
            except ConcurrentUpdate:
                continue
            return {"ModelPackageArn": res.arn}
        raise ConflictException(f"ModelPackage {params['ModelPackageArn']} is being updated; retry.")

    def _apply_update(self, ctx, res: Resource, params: dict[str, Any]) -> None:
        state, request = res.state, res.request
        if params.get("ModelApprovalStatus"):
            state["ModelApprovalStatus"] = params["ModelApprovalStatus"]
        if "ApprovalDescription" in params:
            state["ApprovalDescription"] = params["ApprovalDescription"]
        if "CustomerMetadataProperties" in params or "CustomerMetadataPropertiesToRemove" in params:
            merged = merge_customer_metadata(state.get("CustomerMetadataProperties"),
                                             params.get("CustomerMetadataProperties"),
                                             params.get("CustomerMetadataPropertiesToRemove"))
            state["CustomerMetadataProperties"] = merged
        skip = request.get("SkipModelValidation") == "All"
        check_source_uri(params)
        if params.get("InferenceSpecification"):
            check_inference_specification(params["InferenceSpecification"], "inferenceSpecification",
                                          versioned=True, check_image=not skip)
            request["InferenceSpecification"] = params["InferenceSpecification"]
        additional = params.get("AdditionalInferenceSpecificationsToAdd")
        if additional:
            for i, spec in enumerate(additional, start=1):
                check_additional(spec, f"additionalInferenceSpecificationsToAdd.{i}.member", not skip)
            combined = list(request.get("AdditionalInferenceSpecifications") or []) + list(additional)
            names = [s["Name"] for s in combined]
            if len(set(names)) != len(names):
                raise ValidationException("AdditionalInferenceSpecifications names must be unique within a model "
                                          "package.")
            if len(combined) > MAX_ADDITIONAL_SPECS:
                raise ValidationException(f"A model package can have at most {MAX_ADDITIONAL_SPECS} "
                                          f"AdditionalInferenceSpecifications; this update would make "
                                          f"{len(combined)}.")
            request["AdditionalInferenceSpecifications"] = combined
        for key in ("SourceUri", "ModelCard", "ModelLifeCycle", "ModelPackageRegistrationType"):
            if key in params:
                request[key] = params[key]
        state["LastModifiedBy"] = self._user(ctx)
        state["_updated"] = True

    def list_model_packages(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        group_param = params.get("ModelPackageGroupName")
        kind_filter = params.get("ModelPackageType") or ("Versioned" if group_param else "Unversioned")
        group_arn = self.group_arn(group_param) if group_param else None
        after, before = epoch(params.get("CreationTimeAfter")), epoch(params.get("CreationTimeBefore"))
        contains = (params.get("NameContains") or "").lower()
        approval = params.get("ModelApprovalStatus")
        rows = self.d.resources.in_status(PACKAGE, ("Pending", "InProgress", COMPLETED, "Failed", "Deleting"))

        def keep(r: Resource) -> bool:
            versioned = r.parent_arn is not None
            if kind_filter == "Versioned" and not versioned or kind_filter == "Unversioned" and versioned:
                return False
            if group_arn is not None and r.parent_arn != group_arn:
                return False
            if after is not None and not r.creation_time > after:
                return False
            if before is not None and not r.creation_time < before:
                return False
            if contains and contains not in str(r.state.get("ModelPackageName") or r.name).lower():
                return False
            return not approval or r.state.get("ModelApprovalStatus") == approval

        by_name = params.get("SortBy") == "Name"
        items, token = page(self.d, "ListModelPackages", params, [r for r in rows if keep(r)],
                            lambda r: (r.name if by_name else r.creation_time, r.name))
        out: dict[str, Any] = {"ModelPackageSummaryList": [_package_summary(r) for r in items]}
        if token:
            out["NextToken"] = token
        return out

    def delete_model_package(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self.get_package(params["ModelPackageName"])
        self.d.resources.delete(PACKAGE, res.name)
        self.d.tags.drop_all(res.arn)
        running = res.state.get("_validation") if res.status in ("Pending", "InProgress") else None
        if running:  # a validation in flight: its transform job and model go too
            from opensage.api.dispatch import RequestContext
            from opensage.errors import ServiceError

            for service, op, key in (("transform", "stop_transform_job", "TransformJobName"),
                                     ("models", "delete_model", "ModelName")):
                try:
                    getattr(self.services[service], op)(RequestContext(), {key: running.get("job") or
                                                                           running.get("model")})
                except (KeyError, ServiceError):
                    pass  # not started, already finished or gone
        return {}

    # -- Search ----------------------------------------------------------------------------------------
    def search(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        resource = params["Resource"]
        records = self._search_records(ctx, resource)
        if params.get("CrossAccountFilterOption") == "CrossAccount":
            records = []
        expression = params.get("SearchExpression")
        hits = [r for r in records if search.matches(r, expression)]
        sort_by = params.get("SortBy") or "CreationTime"
        keys = {id(r): search.sort_key(r, sort_by, self._identity(resource, r)) for r in hits}
        if len({type(k[0]) for k in keys.values()}) > 1:  # a property numeric in some records, absent in others
            keys = {i: (str(k[0]), k[1]) for i, k in keys.items()}
        request = {**params, "SortOrder": params.get("SortOrder") or "Descending"}
        items, token = page(self.d, "Search", request, hits, lambda r: keys[id(r)])
        from opensage.services.experiments import SEARCH_RESOURCES

        member = SEARCH_RESOURCES.get(resource, resource)  # ExperimentTrial records are SearchRecord.Trial
        out: dict[str, Any] = {"Results": [{member: r} for r in items]}
        if token:
            out["NextToken"] = token
        return out

    @staticmethod
    def _identity(resource: str, record: dict[str, Any]) -> str:
        return str(record.get(f"{resource}Arn") or record.get("ModelPackageArn") or record.get("TrainingJobArn")
                   or record.get("TrialComponentArn") or record.get("TrialArn") or "")

    def _search_records(self, ctx, resource: str) -> list[dict[str, Any]]:
        if resource == "ModelPackage":
            rows = self.d.resources.in_status(PACKAGE, ("Pending", "InProgress", COMPLETED, "Failed", "Deleting"))
            return [{**describe_package(r), "Tags": self._tags(r.arn)} for r in rows]
        if resource == "ModelPackageGroup":
            rows = self.d.resources.in_status(GROUP, ("Pending", "InProgress", COMPLETED, "Failed", "Deleting",
                                                      "DeleteFailed"))
            return [{**self.describe_model_package_group(ctx, {"ModelPackageGroupName": r.arn}),
                     "Tags": self._tags(r.arn)} for r in rows]
        if resource == "TrainingJob" and "training" in self.services:
            training, out, token = self.services["training"], [], None
            while True:
                listed = training.list_training_jobs(ctx, {"MaxResults": 100, **({"NextToken": token} if token
                                                                                   else {})})
                for summary in listed["TrainingJobSummaries"]:
                    d = training.describe_training_job(ctx, {"TrainingJobName": summary["TrainingJobName"]})
                    out.append({**d, "Tags": self._tags(d["TrainingJobArn"])})
                token = listed.get("NextToken")
                if not token:
                    return out
        from opensage.services.experiments import SEARCH_RESOURCES

        if resource in SEARCH_RESOURCES and "experiments" in self.services:
            return self.services["experiments"].search_records(ctx, resource)
        raise ValidationException(f"Search over {resource} is not supported here; this platform searches "
                                  "TrainingJob, ModelPackage, ModelPackageGroup, Experiment, ExperimentTrial and "
                                  "ExperimentTrialComponent.")

    def _tags(self, arn: str) -> list[dict[str, str]]:
        items, _ = self.d.tags.list(arn, None, 50)
        return items

    # -- what CreateModel uses -------------------------------------------------------------------------
    def resolve_containers(self, name_or_arn: str, container: dict[str, Any], where: str) -> list[dict[str, Any]]:
        """The containers a model gets from a ``ModelPackageName`` container: the package's images, model data
        and environment (the model's own Environment on top), each keeping ``ModelPackageName`` (the ARN).

        A versioned package must be Approved (SageMaker's rule: "For versioned models, the value of this
        parameter must be set to Approved to deploy the model"); ValidationException naming ``where``.
        """
        try:
            res = self.get_package(name_or_arn)
        except ValidationException as e:
            raise ValidationException(f"{e.message} (at '{where}.modelPackageName')") from None
        if res.status != COMPLETED:
            raise ValidationException(f"ModelPackage {res.arn} is in status {res.status}; only a Completed model "
                                      f"package can be used to create a model (at '{where}.modelPackageName').")
        approval = res.state.get("ModelApprovalStatus")
        if res.parent_arn is not None and approval != "Approved":
            raise ValidationException(
                f"ModelPackage {res.arn} has ModelApprovalStatus {approval}: a versioned model package must be "
                f"Approved before a model can be created from it (UpdateModelPackage with ModelApprovalStatus "
                f"Approved; at '{where}.modelPackageName').")
        spec = res.request.get("InferenceSpecification") or {}
        if not spec.get("Containers"):
            raise ValidationException(f"ModelPackage {res.arn} has no InferenceSpecification to create a model "
                                      f"from (at '{where}.modelPackageName').")
        out = []
        for package_container in spec["Containers"]:
            resolved = _model_container(package_container)
            env = {**(package_container.get("Environment") or {}), **(container.get("Environment") or {})}
            if env:
                resolved["Environment"] = env
            for key in ("ContainerHostname", "Mode", "ImageConfig"):
                if container.get(key) and len(spec["Containers"]) == 1:
                    resolved[key] = container[key]
            resolved["ModelPackageName"] = res.arn
            out.append(resolved)
        return out


def _model_container(package_container: dict[str, Any]) -> dict[str, Any]:
    """A ModelPackageContainerDefinition as a model's ContainerDefinition (Image, model data)."""
    out: dict[str, Any] = {"Image": package_container["Image"]}
    if package_container.get("ContainerHostname"):
        out["ContainerHostname"] = package_container["ContainerHostname"]
    if package_container.get("ModelDataUrl"):
        out["ModelDataUrl"] = package_container["ModelDataUrl"]
    source = (package_container.get("ModelDataSource") or {}).get("S3DataSource")
    if source:
        if source.get("S3DataType") == "S3Object" and source.get("CompressionType") == "Gzip":
            out["ModelDataUrl"] = source["S3Uri"]  # the same thing as a ModelDataUrl archive
        else:
            out["ModelDataSource"] = package_container["ModelDataSource"]
    return out


def describe_package(res: Resource) -> dict[str, Any]:
    out: dict[str, Any] = dict(res.request)
    out.update({k: v for k, v in res.state.items() if not k.startswith("_") and v is not None})
    out.update({"ModelPackageArn": res.arn, "CreationTime": res.creation_time, "ModelPackageStatus": res.status,
                "CertifyForMarketplace": bool(res.request.get("CertifyForMarketplace", False))})
    if res.state.get("_updated"):
        out["LastModifiedTime"] = res.last_modified_time
    if res.parent_arn is not None:
        # As SageMaker answers (and moto copies): a version has no name of its own. SDK v3's refresh() then
        # describes it by ARN; given the group name, it would describe a package that does not exist.
        out.pop("ModelPackageName", None)
    return out


def _package_summary(res: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {"ModelPackageArn": res.arn, "CreationTime": res.creation_time,
                           "ModelPackageStatus": res.status}
    if res.parent_arn is None:
        out["ModelPackageName"] = res.name  # ListModelPackages names only unversioned packages
    for key in ("ModelPackageGroupName", "ModelPackageVersion", "ModelApprovalStatus"):
        if res.state.get(key) is not None:
            out[key] = res.state[key]
    for key in ("ModelPackageDescription", "ModelLifeCycle", "ModelPackageRegistrationType"):
        if res.request.get(key) is not None:
            out[key] = res.request[key]
    return out


def _group_summary(res: Resource) -> dict[str, Any]:
    out = {"ModelPackageGroupName": res.name, "ModelPackageGroupArn": res.arn, "CreationTime": res.creation_time,
           "ModelPackageGroupStatus": res.status}
    for key in ("ModelPackageGroupDescription", "ManagedConfiguration"):
        if res.request.get(key):
            out[key] = res.request[key]
    return out
