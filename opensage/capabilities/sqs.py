"""Amazon SQS, minimal and durable (opensage/services/sqs.py): where Callback steps send their tokens.

Other capabilities call it as ``ctx.services["sqs"]`` with API params (the pipeline engine sends a callback
step's message with ``send_message(RequestContext(), {"QueueUrl": ..., "MessageBody": ...})``).
"""

from __future__ import annotations

from opensage.capabilities import CapabilityContext
from opensage.services.sqs import SqsService

TARGET_PREFIX = "AmazonSQS"  # botocore's sqs targetPrefix (AWS JSON 1.0)


def install(ctx: CapabilityContext) -> None:
    service = SqsService(ctx.deps)
    ctx.dispatcher.register("sqs", service)
    ctx.services["sqs"] = service
    # The control-plane route picks a JSON service by the X-Amz-Target prefix from a table of its own
    # (server/routes.py JSON_TARGETS) that capabilities cannot extend through the context yet: add SQS to it.
    from opensage.server import routes

    routes.JSON_TARGETS.setdefault(TARGET_PREFIX, "sqs")
