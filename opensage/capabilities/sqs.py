"""Amazon SQS, minimal and durable (opensage/services/sqs.py): where Callback steps send their tokens.

Other capabilities call it as ``ctx.services["sqs"]`` with API params (the pipeline engine sends a callback
step's message with ``send_message(RequestContext(), {"QueueUrl": ..., "MessageBody": ...})``).
"""

from __future__ import annotations

from opensage.capabilities import CapabilityContext
from opensage.services.sqs import SqsService


def install(ctx: CapabilityContext) -> None:
    service = SqsService(ctx.deps)
    ctx.dispatcher.register("sqs", service)
    ctx.services["sqs"] = service
