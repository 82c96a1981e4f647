"""ARNs as SageMaker writes them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArnBuilder:
    region: str
    account: str

    def sagemaker(self, resource_type: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{resource_type}/{name}"

    def log_group(self, group: str) -> str:
        return f"arn:aws:logs:{self.region}:{self.account}:log-group:{group}"


def parse_sagemaker_arn(arn: str) -> tuple[str, str] | None:
    """``arn:aws:sagemaker:r:a:training-job/x`` -> (``training-job``, ``x``); None if not a SageMaker ARN."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sagemaker":
        return None
    rtype, _, name = parts[5].partition("/")
    if not name:
        return None
    return rtype, name


def with_lower_case_name(arn: str) -> str:
    """The ARN with its resource part lower-cased, as SageMaker writes endpoint ARNs (an endpoint named
    ``MyEndpoint`` is ``...:endpoint/myendpoint``): a caller may build the ARN from the name it chose."""
    head, sep, resource = arn.rpartition(":")
    return f"{head}{sep}{resource.lower()}" if sep else arn
