"""Lineage tracking, the part SDK v2's experiment runs use: artifacts (``CreateArtifact`` / Describe / List /
Update / Delete) and associations between any two ARNs (``AddAssociation`` / List / Delete).

``Run.log_confusion_matrix`` / ``log_roc_curve`` / ``log_precision_recall`` / ``log_artifact`` upload the data to
S3, then create an artifact for it and associate it with the run's trial component (the component ``Produced``
an output artifact; an input artifact ``ContributedTo`` the component). Rows: ``lineage-artifact`` named by its
id (``artifact/<32 hex>`` in the ARN, as SageMaker names them) and ``lineage-association`` named
``<source ARN> <destination ARN>`` (one association per pair, as in SageMaker).
"""

from __future__ import annotations

import uuid
from typing import Any

from opensage.errors import ResourceNotFound, ValidationException
from opensage.services.base import Deps
from opensage.services.experiments import created_page, user_context
from opensage.store.resources import AlreadyExists, Resource

ARTIFACT = "lineage-artifact"
ASSOCIATION = "lineage-association"
CREATED = "Created"


class LineageService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def _artifact(self, arn: str) -> Resource:
        res = self.d.resources.get_by_arn(arn)
        if res is None or res.kind != ARTIFACT:
            raise ResourceNotFound(f"Artifact '{arn}' does not exist.")
        return res

    def _user(self, ctx) -> dict[str, Any]:  # noqa: ANN001
        return user_context(self.d, ctx)

    def _page(self, operation: str, params: dict[str, Any], rows: list[Resource]) -> tuple[list[Resource], str | None]:
        return created_page(self.d, operation, {**params, "SortBy": "CreationTime"}, rows)

    # -- artifacts ---------------------------------------------------------------------------------------
    def create_artifact(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        from opensage.store.tags import check_user_tags

        check_user_tags(params.get("Tags") or [])
        name = uuid.uuid4().hex
        arn = self.d.arns.sagemaker("artifact", name)
        now = self.d.clock.time()
        request = {k: v for k, v in params.items() if k != "Tags"}
        self.d.resources.create(Resource(ARTIFACT, name, arn, CREATED, now, now, request,
                                         {"CreatedBy": self._user(ctx)}))
        self.d.tags.put(arn, params.get("Tags") or [])
        return {"ArtifactArn": arn}

    def describe_artifact(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._artifact(params["ArtifactArn"])
        out = {**res.request, "ArtifactArn": res.arn, "CreationTime": res.creation_time,
               "CreatedBy": res.state.get("CreatedBy") or {}, "LastModifiedTime": res.last_modified_time,
               "LastModifiedBy": res.state.get("LastModifiedBy") or res.state.get("CreatedBy") or {}}
        return out

    def update_artifact(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._artifact(params["ArtifactArn"])
        if "ArtifactName" in params:
            res.request["ArtifactName"] = params["ArtifactName"]
        properties = {**(res.request.get("Properties") or {}), **(params.get("Properties") or {})}
        for key in params.get("PropertiesToRemove") or []:
            properties.pop(key, None)
        res.request["Properties"] = properties
        res.state["LastModifiedBy"] = self._user(ctx)
        self.d.resources.save(res, self.d.clock.time())
        return {"ArtifactArn": res.arn}

    def delete_artifact(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        arn = params.get("ArtifactArn")
        if not arn:
            uri = (params.get("Source") or {}).get("SourceUri")
            match = [r for r in self.d.resources.in_status(ARTIFACT, (CREATED,))
                     if (r.request.get("Source") or {}).get("SourceUri") == uri] if uri else []
            if not match:
                raise ValidationException("Specify ArtifactArn, or a Source whose SourceUri an artifact has.")
            arn = match[0].arn
        res = self._artifact(arn)
        for association in self._associations():
            if res.arn in (association.request["SourceArn"], association.request["DestinationArn"]):
                self.d.resources.delete(ASSOCIATION, association.name)
        self.d.resources.delete(ARTIFACT, res.name)
        self.d.tags.drop_all(res.arn)
        return {"ArtifactArn": res.arn}

    def list_artifacts(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        rows = self.d.resources.in_status(ARTIFACT, (CREATED,))
        if params.get("SourceUri"):
            rows = [r for r in rows if (r.request.get("Source") or {}).get("SourceUri") == params["SourceUri"]]
        if params.get("ArtifactType"):
            rows = [r for r in rows if r.request.get("ArtifactType") == params["ArtifactType"]]
        items, token = self._page("ListArtifacts", params, rows)
        out: dict[str, Any] = {"ArtifactSummaries": [{
            **{k: r.request[k] for k in ("ArtifactName", "Source", "ArtifactType") if k in r.request},
            "ArtifactArn": r.arn, "CreationTime": r.creation_time, "LastModifiedTime": r.last_modified_time}
            for r in items]}
        if token:
            out["NextToken"] = token
        return out

    # -- associations ------------------------------------------------------------------------------------
    def _associations(self) -> list[Resource]:
        return self.d.resources.in_status(ASSOCIATION, (CREATED,))

    def _entity(self, arn: str) -> Resource:
        res = self.d.resources.get_by_arn(arn)
        if res is None:
            from opensage.arns import with_lower_case_name

            res = self.d.resources.get_by_arn(with_lower_case_name(arn))
        if res is None:
            raise ResourceNotFound(f"'{arn}' does not exist.")
        return res

    def add_association(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        source, destination = self._entity(params["SourceArn"]), self._entity(params["DestinationArn"])
        name = f"{source.arn} {destination.arn}"
        now = self.d.clock.time()
        request = {"SourceArn": source.arn, "DestinationArn": destination.arn,
                   "AssociationType": params.get("AssociationType") or "AssociatedWith"}
        try:
            self.d.resources.create(Resource(ASSOCIATION, name, f"{name}", CREATED, now, now, request,
                                             {"CreatedBy": self._user(ctx)}))
        except AlreadyExists:
            raise ValidationException(f"The association from '{source.arn}' to '{destination.arn}' already "
                                      "exists.") from None
        return {"SourceArn": source.arn, "DestinationArn": destination.arn}

    def delete_association(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = f"{params['SourceArn']} {params['DestinationArn']}"
        if self.d.resources.get(ASSOCIATION, name) is None:
            raise ResourceNotFound(f"No association from '{params['SourceArn']}' to '{params['DestinationArn']}'.")
        self.d.resources.delete(ASSOCIATION, name)
        return {"SourceArn": params["SourceArn"], "DestinationArn": params["DestinationArn"]}

    def list_associations(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        rows = self._associations()
        for key in ("SourceArn", "DestinationArn", "AssociationType"):
            if params.get(key):
                rows = [r for r in rows if r.request.get(key) == params[key]]
        for key, side in (("SourceType", "SourceArn"), ("DestinationType", "DestinationArn")):
            if params.get(key):
                rows = [r for r in rows if self._type_of(r.request[side]) == params[key]]
        items, token = self._page("ListAssociations", params, rows)
        summaries = []
        for r in items:
            summary = {**r.request, "CreationTime": r.creation_time, "CreatedBy": r.state.get("CreatedBy") or {}}
            for key, side in (("SourceType", "SourceArn"), ("DestinationType", "DestinationArn")):
                kind = self._type_of(r.request[side])
                if kind:
                    summary[key] = kind
            for key, side in (("SourceName", "SourceArn"), ("DestinationName", "DestinationArn")):
                entity = self.d.resources.get_by_arn(r.request[side])
                if entity is not None:
                    summary[key] = entity.request.get("ArtifactName") or entity.name
            summaries.append(summary)
        out: dict[str, Any] = {"AssociationSummaries": summaries}
        if token:
            out["NextToken"] = token
        return out

    def _type_of(self, arn: str) -> str | None:
        """An artifact's ArtifactType; None for other entities (their type is not recorded here)."""
        res = self.d.resources.get_by_arn(arn)
        return res.request.get("ArtifactType") if res is not None and res.kind == ARTIFACT else None
