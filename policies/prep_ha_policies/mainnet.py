"""MainNet guard: a MainNet validator cannot be terminated by a stray API call or `destroy`."""

from __future__ import annotations

from pulumi_policy import (
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from .props import INSTANCE, get, is_true
from .settings import is_mainnet


def _validate_termination_protection(args: ResourceValidationArgs,
                                     report: ReportViolation) -> None:
    if args.resource_type != INSTANCE or not is_mainnet(args.get_config()):
        return
    if not is_true(get(args.props, "disableApiTermination")):
        report("A MainNet node without termination protection can be terminated by one API "
               "call, taking its chain and the validator with it. Fix: remove "
               "icon-prep-ha:terminationProtection from the stack config (MainNet defaults to "
               "true) so disable_api_termination=True.")


mainnet_termination_protection = ResourceValidationPolicy(
    name="mainnet-termination-protection",
    description="MainNet instances have termination protection (disable_api_termination).",
    validate=_validate_termination_protection,
    config_schema=PolicyConfigSchema(properties={"iconNetwork": {"type": "string"}}),
)
