"""Bootstrap of the Pacemaker cluster over SSH, with the script rendered from the cluster model.

The script travels as the Commands' stdin and depends only on stack config, so it is known at
`pulumi preview` time and the policy pack judges it even before the instances exist; the
instance ids (known only after EC2 creates the nodes) reach it as environment on the command
line.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_command import local, remote

from prep_ha.cluster.model import build_model
from prep_ha.cluster.pcs import model_digest, render_script
from prep_ha.config import StackConfig
from prep_ha.ops.shell import KNOWN_HOSTS_ENV, NODES_ENV, known_hosts_lines

# cloud-init's verdict on the first boot: 0 done, 1 failed, and (cloud-init 23.4 and later,
# Debian 13's 25.1) 2 for "degraded done": finished, with recoverable errors such as a
# deprecated key. Only a failure stops the bootstrap; warnings are shown, not fatal.
CLOUD_INIT_DONE = """out=$(sudo cloud-init status --wait --long 2>&1) && rc=0 || rc=$?
case "$rc" in
  0) ;;
  2) echo "cloud-init finished with warnings on $(hostname) (degraded, not failed):" >&2
     echo "$out" >&2 ;;
  *) echo "cloud-init did not finish cleanly on $(hostname):" >&2
     # The payload installer's own account of what stopped the boot, first.
     sudo cat /var/lib/prep-ha/payload.failed >&2 2>/dev/null || true
     echo "$out" >&2
     exit 1 ;;
esac
"""
# Runs as the SSH user on each node before anything touches the cluster. Every failure names
# what is wrong: cloud-init's own error, or the boot services the bootstrap depends on.
NODE_READY = "set -u\n" + CLOUD_INIT_DONE + """problems=""
for unit in prep-ha-network prep-ha-hacluster-password pcsd; do
  # A unit may still be retrying (Restart=on-failure): give it two minutes to settle.
  for _ in $(seq 24); do
    systemctl is-active --quiet "$unit.service" && break
    sleep 5
  done
  systemctl is-active --quiet "$unit.service" || problems="$problems $unit.service is not active;"
done
test -x /usr/local/sbin/prep-ha-secret || problems="$problems prep-ha-secret is missing;"
mountpoint -q /app/icon || problems="$problems the data volume is not mounted at /app/icon;"
if [ -n "$problems" ]; then
  echo "node $(hostname) is not ready:$problems" >&2
  sudo systemctl --failed --no-pager >&2 || true
  exit 1
fi
echo "node $(hostname) ready"
"""
SETUP = "sudo bash -s setup"
# pcs stops resources, then pacemaker, then corosync on both nodes: no fencing on the way down.
STOP_CLUSTER = "sudo pcs cluster stop --all --request-timeout=300"
HEALTH = "sudo bash -s health"


def retire_command(node: str) -> str:
    return f"sudo bash -s retire {node}"


def rejoin_command(node: str) -> str:
    return f"sudo bash -s rejoin {node}"


def roll_command(cfg: StackConfig, payload_digests: Sequence[str]) -> str:
    """Runs where `pulumi up` runs, like keystore-put: it talks to both nodes in turn, which
    no single remote Command can. The image and each node's payload digest are on the command
    line, so `pulumi preview --diff` shows that a roll will happen, and of what."""
    payloads = " ".join(f"--payload {n}={d}"
                        for n, d in zip(cfg.node_names, payload_digests, strict=True))
    return (f"python3 -m prep_ha roll --stack {cfg.stack} --image {cfg.icon_image} "
            f"{payloads} --key-stdin")


@dataclass
class PacemakerClusterArgs:
    config: StackConfig
    instance_ids: Sequence[pulumi.Input[str]]  # node 1, node 2
    ssh_hosts: Sequence[pulumi.Input[str]]  # management EIP or management private IP
    ssh_user: str
    ssh_private_key: pulumi.Input[str]
    # Each node's ed25519 host key (`ssh-ed25519 AAAA...`), installed by prep-ha-ssh-host-key:
    # the bootstrap talks to that node only, never to whatever answers at the address first.
    ssh_host_keys: Sequence[pulumi.Input[str]]
    ready: Sequence[pulumi.Resource]  # instances, ENI attachments, EIPs, volume attachments
    payload_digests: Sequence[pulumi.Input[str]]  # node 1, node 2 (components/node.py)
    # Multi-AZ: the route tables of the peer's overlay IP (components/overlay.py), which the
    # CIB's aws-vpc-move-ip resource names; single-AZ: none.
    route_table_ids: Sequence[pulumi.Input[str]] = ()


def push_command(env_names: Sequence[str], values: Sequence[str]) -> str:
    """The command line of the CIB push: what AWS named (ClusterModel.environment: instance
    ids, multi-AZ route tables) as environment, the script on stdin."""
    env = " ".join(f"{n}={shlex.quote(v)}" for n, v in zip(env_names, values, strict=True))
    return f"sudo env {env} bash -s push"


class PacemakerCluster(pulumi.ComponentResource):
    """Waits for both nodes, sets up Corosync once, keeps each node a member (retired and
    rejoined by the other node when its instance is replaced), and pushes the whole CIB
    (STONITH included)."""

    def __init__(self, name: str, args: PacemakerClusterArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("icon-prep-ha:cluster:PacemakerCluster", name, None, opts)
        cfg = args.config
        model = build_model(cfg)
        script = render_script(model, hacluster_secret_id=cfg.hacluster_secret_name)
        connections = [
            remote.ConnectionArgs(host=host, user=args.ssh_user,
                                  private_key=args.ssh_private_key, host_key=host_key,
                                  # Fresh instances take a minute or two before sshd answers
                                  # with the pinned key (a mismatch is a dial error, retried).
                                  dial_error_limit=60, per_dial_timeout=10)
            for host, host_key in zip(args.ssh_hosts, args.ssh_host_keys, strict=True)
        ]
        # Each node's Commands run again on a new instance of it (triggers: its instance id).
        waits = [
            remote.Command(
                f"{name}-{node}-ready", connection=conn, create=NODE_READY,
                triggers=[instance_id],
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.ready)))
            for node, conn, instance_id in zip(cfg.node_names, connections, args.instance_ids,
                                               strict=True)
        ]
        # A changed script re-runs `setup`, which leaves an existing corosync.conf alone; no
        # triggers here, because a replacement would run `delete` and stop a live cluster.
        setup = remote.Command(
            f"{name}-corosync-setup", connection=connections[0], create=SETUP, update=SETUP,
            stdin=script, delete=STOP_CLUSTER,
            opts=pulumi.ResourceOptions(parent=self, depends_on=waits))
        # A node's membership, run on the *other* node (prep_ha/cluster/membership.py). When
        # the node's instance is replaced (the instance is delete-before-replace, and the new
        # id is a trigger), Pulumi deletes this first: `retire` takes the node out while the
        # other one keeps the peer; the new instance's `rejoin` brings it back as the citizen.
        # On the first `up` the node is already a member and `rejoin` says so. `pulumi destroy`
        # deletes the setup too and skips `retire` (deleted_with): nothing is left to protect.
        memberships = [
            remote.Command(
                f"{name}-{node}-membership", connection=connections[1 - index],
                create=rejoin_command(node), delete=retire_command(node), stdin=script,
                triggers=[args.instance_ids[index]],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[setup, waits[index]],
                                            delete_before_replace=True, deleted_with=setup))
            for index, node in enumerate(cfg.node_names)
        ]
        tables = pulumi.Output.all(*args.route_table_ids).apply(",".join)
        push = pulumi.Output.all(*args.instance_ids, tables).apply(
            lambda v: push_command(model.environment, v if args.route_table_ids else v[:-1]))
        self.cib_push = remote.Command(
            f"{name}-cib-push", connection=connections[0], create=push, update=push,
            stdin=script, triggers=[model_digest(model)],
            opts=pulumi.ResourceOptions(parent=self, depends_on=memberships))
        # Runs whenever the push does: `pulumi up` fails unless Peer and Ctz end up started on
        # different nodes with fencing running and no failed actions.
        self.health = remote.Command(
            f"{name}-health", connection=connections[0], create=HEALTH, update=HEALTH,
            stdin=script, triggers=[model_digest(model), *args.instance_ids],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cib_push]))
        # A new instance installs the stack's payload at first boot; a running node gets a new
        # iconImageTag or a changed node file (a new payload digest) through this roll
        # (prep_ha/ops/roll.py), after the cluster is found healthy, one node at a time with at
        # most one planned switchover. It changes nothing when both nodes already run the
        # image and their payloads.
        hosts = pulumi.Output.all(*args.ssh_hosts)
        roll = pulumi.Output.all(*args.payload_digests).apply(lambda d: roll_command(cfg, d))
        # known_hosts lines: each management address with the host key pinned for it.
        self.ssh_known_hosts = pulumi.Output.all(*args.ssh_hosts, *args.ssh_host_keys).apply(
            lambda v: known_hosts_lines(v[:len(v) // 2], v[len(v) // 2:]))
        self.node_roll = local.Command(
            f"{name}-node-roll", create=roll, update=roll, triggers=list(args.instance_ids),
            environment={
                NODES_ENV: hosts.apply(lambda h: " ".join(
                    f"{n}={a}" for n, a in zip(cfg.node_names, h, strict=True))),
                KNOWN_HOSTS_ENV: self.ssh_known_hosts,
            },
            # The admin key reaches the command on stdin only (never argv or environment),
            # secret in the state (the policy pack admits a key only in a secret field).
            stdin=pulumi.Output.secret(args.ssh_private_key),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.health],
                                        additional_secret_outputs=["stdin"],
                                        # It rolled only the image before payloads existed.
                                        aliases=[pulumi.Alias(name=f"{name}-image-roll")]))
        self.script = pulumi.Output.from_input(script)
        self.pcs_status_command = pulumi.Output.concat(
            "ssh ", args.ssh_user, "@", args.ssh_hosts[0], " sudo pcs status --full")
        self.register_outputs({"cibPush": self.cib_push.stdout, "health": self.health.stdout,
                               "pcsStatusCommand": self.pcs_status_command})
