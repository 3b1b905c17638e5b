"""Multi-AZ: the routes that carry the peer's overlay IP to the active node.

The peer's address (cfg.peer_vip) lies outside the VPC, so no subnet owns it: every route
table that must reach it has a `<ip>/32` route to the active node's service ENI, and
Pacemaker's `ocf:heartbeat:aws-vpc-move-ip` moves those routes at failover (ec2:ReplaceRoute,
components/iam.py). Its start replaces the route and fails where none exists, so Pulumi
creates them, pointing at node 1 (the node that starts active), and then leaves their target
to Pacemaker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from prep_ha.config import StackConfig


@dataclass(frozen=True)
class PeerOverlayRoutesArgs:
    config: StackConfig
    # components/network.py Network.overlay_route_table_ids: table role -> route table id.
    route_table_ids: Mapping[str, pulumi.Input[str]]
    # Node 1's service ENI (components/node.py NodePair.service_eni_ids[0]).
    network_interface_id: pulumi.Input[str]


class PeerOverlayRoutes(pulumi.ComponentResource):
    # The routes by table role, e.g. "service-1".
    route_ids: dict[str, pulumi.Output[str]]
    # The tables those routes are in: what the CIB's aws-vpc-move-ip resource moves.
    route_table_ids: list[pulumi.Output[str]]
    destination: str

    def __init__(self, name: str, args: PeerOverlayRoutesArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("icon-prep-ha:overlay:PeerOverlayRoutes", name, None, opts)
        self.destination = f"{args.config.peer_vip}/32"
        self.route_ids = {
            role: aws.ec2.Route(
                f"{name}-{role}", route_table_id=table_id,
                destination_cidr_block=self.destination,
                network_interface_id=args.network_interface_id,
                # Pacemaker moves the route after a failover; the next `up` must not move it
                # back to node 1 under the running peer.
                opts=pulumi.ResourceOptions(parent=self,
                                            ignore_changes=["networkInterfaceId"])).id
            for role, table_id in args.route_table_ids.items()
        }
        self.route_table_ids = [pulumi.Output.from_input(t)
                                for t in args.route_table_ids.values()]
        self.register_outputs({"destination": self.destination, "routeIds": self.route_ids,
                               "routeTableIds": self.route_table_ids})
