"""Entry point of the Pulumi project: builds the site named by the stack.

``pulumi up -s aws-euc1`` builds site ``aws-euc1`` of ``stacks/fleet.yaml``;
the stack's own settings come from ``stacks/Pulumi.aws-euc1.yaml`` through the
fleet model, which checks them against the rest of the fleet first.
"""

from pathlib import Path

import pulumi

from cloud.program import ProgramError, build_site
from gpufleet.errors import FleetError
from gpufleet.model import load_fleet

FLEET_FILE = Path(__file__).resolve().parent / "stacks" / "fleet.yaml"

try:
    build_site(load_fleet(FLEET_FILE), pulumi.get_stack())
except FleetError as exc:
    raise pulumi.RunError("the fleet description has problems:\n" + "\n".join(str(p) for p in exc.problems)) from None
except ProgramError as exc:
    raise pulumi.RunError(str(exc)) from None
