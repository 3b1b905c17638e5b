"""Render the cluster model as a pcs script, and parse such a script back into the model.

The script is the single artefact that reaches a cluster: the bootstrap pipes it to bash on
node 1, the tests and the simulate command run its `build-cib` part on an empty CIB file, the
lab applies it to real Corosync/Pacemaker, and the policy pack parses it back (`parse_script`)
to judge what will really be deployed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shlex
import tempfile

from prep_ha.cluster.membership import membership_functions
from prep_ha.cluster.model import (
    AWSVIP_AGENT,
    FENCE_AGENT,
    Alert,
    ClusterModel,
    ClusterNode,
    Colocation,
    Corosync,
    FenceDevice,
    Group,
    Knet,
    Location,
    Op,
    Order,
    Primitive,
    QuorumDevice,
)
from prep_ha.nodetools import node_tools

PCS_F = 'pcs -f "$CIB"'
SETUP = "pcs cluster setup"
QDEVICE = "pcs quorum device add"
EXPECTED_VOTES = "set_expected_votes"
DIGEST_ATTR = "prep-ha-model-digest"


# Reads `crm_mon --output-as=xml` on stdin; argv: NODE... -- GROUP=MEMBER,... -- FENCE...
# Prints one line per problem (nothing when healthy): the health check of `health` below.
HEALTH_CHECK = """
import sys
import xml.etree.ElementTree as ET
args = sys.argv[1:]
cut = [i for i, a in enumerate(args) if a == "--"]
nodes, groups, fences = args[:cut[0]], args[cut[0] + 1:cut[1]], args[cut[1] + 1:]
try:
    root = ET.fromstring(sys.stdin.read())
except ET.ParseError:
    sys.exit("crm_mon gave no status: is the cluster running?")
state = {n.get("name"): n for n in root.iter("node") if n.get("type") == "member"}
for name in nodes:
    n = state.get(name)
    if n is None or n.get("online") != "true":
        print(f"node {name} is not online")
    elif n.get("standby") == "true" or n.get("maintenance") == "true":
        print(f"node {name} is in standby or maintenance")
    elif n.get("unclean") == "true":
        print(f"node {name} is unclean (waiting to be fenced)")
# Started and settled: a resource still starting (or stopping) is not healthy yet.
where = {r.get("id"): [x.get("name") for x in r.findall("node")]
         for r in root.iter("resource")
         if r.get("role") == "Started" and r.get("active") == "true" and not r.get("pending")}
holders = []
for spec in groups:
    group, members = spec.split("=")
    on = {tuple(where.get(m, [])) for m in members.split(",")}
    if len(on) != 1 or len(next(iter(on))) != 1:
        print(f"group {group} is not started on one node: {sorted(on)}")
    else:
        holders.append(next(iter(on))[0])
if len(holders) != len(set(holders)):
    print(f"groups share a node: {holders}")
for fence in fences:
    if not where.get(fence):
        print(f"fence device {fence} is not started")
for f in root.iter("failure"):
    print("failed action: {} {} on {}: {}".format(f.get("op_key") or f.get("task"),
          f.get("status"), f.get("node"), f.get("exitreason") or f.get("exitstatus")))
"""


class Expand(str):
    """A token the shell must expand (an instance id variable): rendered in double quotes."""


def _q(token: str) -> str:
    return f'"{token}"' if isinstance(token, Expand) else shlex.quote(token)


def _kv(pairs: tuple[tuple[str, str], ...]) -> list[str]:
    # A value naming a variable (the overlay's route tables) is expanded by the script.
    return [Expand(f"{k}={v}") if v.startswith("${") else f"{k}={v}" for k, v in pairs]


def _ops(ops: tuple[Op, ...]) -> list[str]:
    words: list[str] = []
    for op in ops:
        words += ["op", op.name, f"interval={op.interval}", f"timeout={op.timeout}"]
        if op.on_fail:
            words.append(f"on-fail={op.on_fail}")
    return words


def _host_map(fence: FenceDevice) -> Expand:
    return Expand("pcmk_host_map=" + ";".join(f"{node}:${{{env}}}" for node, env in fence.host_map))


def cib_commands(model: ClusterModel) -> list[list[str]]:
    """The pcs -f argument lists that build the whole configuration, STONITH included."""
    cmds: list[list[str]] = [["property", "set", *_kv(model.properties)]]
    for fence in model.fence_devices:
        cmds.append(["stonith", "create", fence.id, fence.agent, *_kv(fence.params),
                     _host_map(fence), *_ops(fence.ops), *_force(fence.agent)])
    for group in model.groups:
        for rsc in group.members:
            force = _force(rsc.agent)
            cmds.append(["resource", "create", rsc.id, rsc.agent, *_kv(rsc.params),
                         *_ops(rsc.ops), *force])
        # Members join their group in a step of its own: pcs 0.12 deprecates `create --group`
        # (the same <group> in the CIB).
        cmds.append(["resource", "group", "add", group.id, *(r.id for r in group.members)])
        if group.meta:
            cmds.append(["resource", "meta", group.id, *_kv(group.meta)])
    for loc in model.locations:
        cmds.append(["constraint", "location", loc.resource, "prefers", f"{loc.node}={loc.score}"])
    for col in model.colocations:
        # score= (pcs 0.12 deprecates a bare score); the id pcs gives the bare form, so that a
        # cluster configured before keeps its constraint.
        cmds.append(["constraint", "colocation", "add", col.resource, "with", col.with_resource,
                     f"score={col.score}", f"id={colocation_id(col)}"])
    for order in model.orders:
        cmds.append(["constraint", "order", order.first_action, order.first, "then",
                     order.then_action, order.then, f"kind={order.kind}",
                     f"symmetrical={str(order.symmetrical).lower()}"])
    if model.resource_defaults:
        cmds.append(["resource", "defaults", "update", *_kv(model.resource_defaults)])
    if model.op_defaults:
        cmds.append(["resource", "op", "defaults", "update", *_kv(model.op_defaults)])
    for alert in model.alerts:
        cmds.append(["alert", "create", f"path={alert.path}", f"id={alert.id}"])
    return cmds


def _force(agent: str) -> list[str]:
    """--force for the agents pcs cannot look up where the CIB is built: systemd units and
    the node's own agents (cloud-init/files/) exist on the nodes only, not where the tests
    build the CIB; a typo in an agent name still fails crm_verify and the lab."""
    ours = agent in (AWSVIP_AGENT, FENCE_AGENT)
    return ["--force"] if ours or agent.startswith("systemd:") else []


def colocation_id(col: Colocation) -> str:
    """The id pcs gives `colocation add A with B SCORE`: colocation-A-B-SCORE."""
    return f"colocation-{col.resource}-{col.with_resource}-{col.score}"


def setup_command(model: ClusterModel) -> list[str]:
    """`pcs cluster setup` arguments: knet link 0 on the heartbeat subnet, link 1 on service."""
    c = model.corosync
    words = [c.cluster_name]
    for n in model.nodes:
        words += [n.name, f"addr={n.heartbeat_ip}", f"addr={n.service_ip}"]
    # pcs itself writes two_node: 1 for a two-node cluster (it refuses the option) and takes
    # it out again when the quorum device is added; wait_for_all stays visible in review.
    if c.two_node != (len(model.nodes) == 2 and c.qdevice is None):
        raise ValueError("two_node holds exactly for two nodes without a quorum device")
    words += ["transport", c.transport]
    if c.knet is not None:
        words.append(f"link_mode={c.knet.link_mode}")
        for link in (0, 1):
            words += ["link", f"linknumber={link}", f"ping_interval={c.knet.ping_interval_ms}",
                      f"ping_timeout={c.knet.ping_timeout_ms}",
                      f"pong_count={c.knet.pong_count}"]
    words += ["totem", f"token={c.token_ms}", f"consensus={c.consensus_ms}"]
    if c.token_retransmits is not None:
        words.append(f"token_retransmits_before_loss_const={c.token_retransmits}")
    words += ["quorum", "wait_for_all=1"]
    return words


def quorum_device_command(device: QuorumDevice) -> list[str]:
    """`pcs quorum device add` arguments: qnetd on the arbiter, ffsplit, the peer heuristic."""
    return [f"timeout={device.timeout_ms}", "model", "net", f"host={device.host}",
            f"algorithm={device.algorithm}",
            "heuristics", "mode=sync", *(f"exec_{name}={cmd}" for name, cmd in device.heuristics)]


def corosync_conf(model: ClusterModel) -> str:
    """corosync.conf exactly as the nodes' `pcs cluster setup` writes it for this model (no
    nodes needed), and as `pcs quorum device add` then rewrites it."""
    tools = node_tools()
    with tempfile.TemporaryDirectory(prefix="prep-ha-corosync-") as tmp:
        path = os.path.join(tmp, "corosync.conf")
        steps = [["pcs", "cluster", "setup", *setup_command(model), "--corosync_conf", path,
                  "--no-cluster-uuid"]]
        if model.corosync.qdevice is not None:
            steps.append(["pcs", f"--corosync_conf={path}", "quorum", "device", "add",
                          *quorum_device_command(model.corosync.qdevice)])
        for argv in steps:
            proc = tools.run(argv, paths=[tmp])
            if proc.returncode != 0:
                raise RuntimeError(f"{shlex.join(argv)} failed on {tools.where}: "
                                   f"{proc.stderr or proc.stdout}")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    if model.corosync.expected_votes is not None:  # as set_expected_votes edits it
        text = re.sub(r"^( *)provider: corosync_votequorum$",
                      rf"\g<0>\n\1expected_votes: {model.corosync.expected_votes}", text,
                      count=1, flags=re.M)
    return text


def model_digest(model: ClusterModel) -> str:
    return hashlib.sha256(repr(model).encode()).hexdigest()[:16]


def _line(prefix: str, argv: list[str]) -> str:
    return prefix + " " + " ".join(_q(a) for a in argv)


def render_script(model: ClusterModel, *, hacluster_secret_id: str) -> str:
    """The bootstrap script for node 1. Deterministic: the same model gives the same bytes."""
    nodes = model.nodes
    name = model.corosync.cluster_name
    what = {n.instance_id_env: f"instance id of {n.name}" for n in nodes}
    env_checks = "\n".join(
        f'  : "${{{env}:?{what.get(env, "route tables of the peer address")} '
        '(set by the bootstrap)}"' for env in model.environment)
    auth_nodes = " ".join(f"{shlex.quote(n.name)} addr={n.heartbeat_ip}" for n in nodes)
    node_names = " ".join(shlex.quote(n.name) for n in nodes)
    ids = " ".join(f'"${{{env}}}"' for env in model.environment)
    build = "\n".join("  " + _line(PCS_F, argv) for argv in cib_commands(model))
    health_groups = " ".join(
        shlex.quote(g.id + "=" + ",".join(r.id for r in g.members)) for g in model.groups)
    fence_ids = " ".join(shlex.quote(f.id) for f in model.fence_devices)
    quorum = _quorum_device_step(model.corosync, hacluster_secret_id)
    return f"""#!/bin/bash
# Pacemaker bootstrap of cluster {model.corosync.cluster_name}, generated by icon-prep-ha from
# its cluster model. Do not edit: change the stack config and run `pulumi up`.
#   build-cib FILE  (re)build the whole configuration in a CIB file (offline, no cluster)
#   setup           authenticate pcsd, set up corosync once, start and enable the cluster
#   push            build the configuration from the live CIB and push it if it changed
#   health          wait until both nodes run their roles with no failed actions, else fail
#   retire NODE     on the other node, before NODE's instance is replaced: standby, then out
#   rejoin NODE     on the other node, once NODE's new instance is up: back in as the citizen
set -euo pipefail
MODEL_DIGEST={model_digest(model)}
COROSYNC_CONF=${{COROSYNC_CONF:-/etc/corosync/corosync.conf}}
HEALTH_CHECK={shlex.quote(HEALTH_CHECK)}

require_instance_ids() {{
{env_checks}
}}

build_cib() {{
  local CIB="$1" scope
  # What the model configures is rebuilt whole, on an empty CIB or over an earlier build
  # (nodes and their attributes stay; properties and defaults are set key by key).
  # Constraints go first: the schema refuses constraints naming resources that are gone.
  for scope in constraints resources alerts; do
    # An empty CIB has no <alerts/> yet.
    CIB_file="$CIB" cibadmin --query --scope "$scope" >/dev/null 2>&1 || continue
    CIB_file="$CIB" cibadmin --replace --scope "$scope" --xml-text "<$scope/>"
  done
{build}
}}

{membership_functions(model)}
{_expected_votes_function(model.corosync)}
# pcsd_auth HOST [addr=ADDRESS]...: the hacluster password reaches pcs on stdin (printf is a
# builtin), never on a command line, which every local user can read in /proc; a failed or
# empty fetch stops the step here instead of authenticating with an empty password.
pcsd_auth() {{
  local password
  if ! password=$(/usr/local/sbin/prep-ha-secret {shlex.quote(hacluster_secret_id)}); then
    echo "cannot read the hacluster password ({hacluster_secret_id}) from Secrets \
Manager: check the node role and prep-ha-hacluster-password.service" >&2
    exit 1
  fi
  if [ -z "$password" ]; then
    echo "the hacluster password ({hacluster_secret_id}) is empty" >&2
    exit 1
  fi
  printf '%s\\n' "$password" | pcs host auth "$@" -u hacluster
}}

setup() {{
  # Never `pcs cluster setup --force` here: it would destroy a live cluster.
  if grep -qx ' *cluster_name: {name}' "$COROSYNC_CONF" 2>/dev/null; then
    echo "cluster {name} already set up, leaving corosync.conf as it is"
  elif pcs status >/dev/null 2>&1; then
    echo "a cluster other than {name} runs on this node: refusing to touch it" >&2
    exit 1
  else
    pcsd_auth {auth_nodes}
    {_line(SETUP, setup_command(model))}
  fi
  pcs cluster start --all --wait=300
  pcs cluster enable --all
{quorum}}}

push() {{
  require_instance_ids
  local digest current
  digest=$(printf '{" ".join(["%s"] * (len(model.environment) + 1))}' "$MODEL_DIGEST" {ids} \
    | sha256sum | cut -c1-16)
  current=$(crm_attribute --type crm_config --name {DIGEST_ATTR} --query --quiet \
    2>/dev/null || true)
  if [ "$digest" = "$current" ]; then
    echo "cluster configuration $digest already pushed, nothing to do"
    return 0
  fi
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  pcs cluster cib "$dir/live.xml"
  cp "$dir/live.xml" "$dir/new.xml"
  # Rebuild the configuration from the model on top of the live CIB, then push only the
  # difference: unchanged resources are not restarted, and STONITH is in the very first push.
  build_cib "$dir/new.xml"
  CIB_file="$dir/new.xml" crm_attribute --type crm_config --name {DIGEST_ATTR} --update "$digest"
  # Verify the configuration alone: live node states (a node down for maintenance) are not
  # configuration errors and must not block a push.
  cp "$dir/new.xml" "$dir/verify.xml"
  for scope in nodes status; do
    CIB_file="$dir/verify.xml" cibadmin --replace --scope "$scope" --xml-text "<$scope/>"
  done
  crm_verify --xml-file "$dir/verify.xml"
  # --wait: done once the cluster has applied it (a changed fence device restarts), so that
  # the health check after the push judges the new configuration, not the one before.
  pcs cluster cib-push "$dir/new.xml" diff-against="$dir/live.xml" --wait=300
  echo "cluster configuration $digest pushed to nodes: {node_names}"
}}

health() {{
  # `pulumi up` ends here: it fails, naming what is wrong, unless the cluster is healthy.
  local deadline=$((SECONDS + ${{HEALTH_TIMEOUT:-300}})) problems
  while :; do
    problems=$(crm_mon --one-shot --output-as=xml 2>&1 | python3 -c "$HEALTH_CHECK" \\
      {node_names} -- {health_groups} -- {fence_ids} || true)
    if [ -z "$problems" ]; then
      echo "cluster {name} healthy: both nodes online, every resource started, no failed actions"
      return 0
    fi
    [ "$SECONDS" -ge "$deadline" ] && break
    sleep 5
  done
  echo "cluster {name} is not healthy after ${{HEALTH_TIMEOUT:-300}} s:" >&2
  echo "$problems" >&2
  pcs status --full >&2 || true
  exit 1
}}

case "${{1:-}}" in
  build-cib) require_instance_ids; build_cib "$2" ;;
  setup) setup ;;
  push) push ;;
  health) health ;;
  retire) retire "$2" ;;
  rejoin) rejoin "$2" ;;
  *) echo "usage: $0 build-cib FILE | setup | push | health | retire NODE | rejoin NODE" >&2
     exit 2 ;;
esac
"""


def _quorum_device_step(corosync: Corosync, hacluster_secret_id: str) -> str:
    """The end of `setup`: add the arbiter's vote once (pcs sets up qdevice's TLS through the
    arbiter's pcsd and turns two_node off), then pin the expected votes. The arbiter may
    still be booting: wait for it."""
    device = corosync.qdevice
    if device is None:
        return ""
    host = shlex.quote(device.host)
    return f"""  if grep -qx ' *model: net' "$COROSYNC_CONF" 2>/dev/null; then
    echo "quorum device already configured"
  else
    for attempt in $(seq 60); do
      pcsd_auth {host} && break
      if [ "$attempt" -eq 60 ]; then
        echo "the arbiter {host} did not answer on pcsd (2224) within 10 min" >&2
        exit 1
      fi
      sleep 10
    done
    {_line(QDEVICE, quorum_device_command(device))}
  fi
  {EXPECTED_VOTES} {corosync.expected_votes}
"""


def _expected_votes_function(corosync: Corosync) -> str:
    if corosync.expected_votes is None:
        return ""
    return r"""
# set_expected_votes N: quorum { expected_votes: N } on both nodes, live. pcs has no option
# for it (`pcs quorum update` refuses it): edit this node's corosync.conf, send it to both
# nodes and have corosync reload it. Nothing changes when N is already set.
set_expected_votes() {
  if grep -qx " *expected_votes: $1" "$COROSYNC_CONF"; then
    echo "expected_votes $1 already set"
    return 0
  fi
  sed -i -E "/^ *expected_votes:/d
    s/^( *)provider: corosync_votequorum$/&\n\1expected_votes: $1/" "$COROSYNC_CONF"
  pcs cluster sync corosync
  pcs cluster reload corosync
  echo "expected_votes $1 set on every node"
}
"""


class ScriptParseError(ValueError):
    pass


def _pairs(words: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for w in words:
        if "=" not in w:
            raise ScriptParseError(f"expected key=value, got {w!r}")
        k, v = w.split("=", 1)
        out.append((k, v))
    return tuple(out)


def _split_ops(words: list[str]) -> tuple[list[str], tuple[Op, ...]]:
    """Split `k=v ... op NAME k=v ...` into the parameters and the operations."""
    if "op" not in words:
        return words, ()
    i = words.index("op")
    params, rest, ops = words[:i], words[i:], []
    while rest:
        if rest[0] != "op" or len(rest) < 2:
            raise ScriptParseError(f"unexpected operation words {rest!r}")
        j = 2
        while j < len(rest) and rest[j] != "op":
            j += 1
        attrs = dict(_pairs(rest[2:j]))
        ops.append(Op(rest[1], attrs.get("interval", "0s"), attrs.get("timeout", ""),
                      attrs.get("on-fail")))
        rest = rest[j:]
    return params, tuple(ops)


_ENV = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def _parse_host_map(value: str) -> tuple[tuple[str, str], ...]:
    out = []
    for entry in filter(None, value.split(";")):
        node, _, target = entry.partition(":")
        m = _ENV.match(target)
        out.append((node, m.group(1) if m else target))
    return tuple(out)


def parse_script(script: str) -> ClusterModel:
    """Read a rendered bootstrap script back into the model it configures.

    Only what pcs will actually run counts: every `pcs -f "$CIB" ...` line and the
    `pcs cluster setup` line. A property set twice keeps its last value, as in pcs.
    """
    corosync: Corosync | None = None
    qdevice: QuorumDevice | None = None
    expected_votes: int | None = None
    alerts: list[Alert] = []
    nodes: list[ClusterNode] = []
    fences: list[FenceDevice] = []
    primitives: dict[str, Primitive] = {}
    grouped: set[str] = set()
    groups: dict[str, list[Primitive]] = {}
    metas: dict[str, list[tuple[str, str]]] = {}
    props: dict[str, str] = {}
    locations, colocations, orders = [], [], []
    rsc_defaults: dict[str, str] = {}
    op_defaults: dict[str, str] = {}
    for raw in script.splitlines():
        line = raw.strip()
        if line.startswith(SETUP + " "):
            corosync, nodes = _parse_setup(shlex.split(line)[3:])
            continue
        if line.startswith(QDEVICE + " "):
            qdevice = _parse_qdevice(shlex.split(line)[4:])
            continue
        if line.startswith(EXPECTED_VOTES + " "):
            expected_votes = int(shlex.split(line)[1])
            continue
        if not line.startswith(PCS_F + " "):
            continue
        argv = [w for w in shlex.split(line[len(PCS_F):]) if w not in ("--force", "--")]
        head = argv[:2]
        if head == ["property", "set"]:
            props.update(_pairs(argv[2:]))
        elif head == ["stonith", "create"]:
            params, ops = _split_ops(argv[4:])
            pairs = _pairs(params)
            host_map = _parse_host_map(dict(pairs).get("pcmk_host_map", ""))
            fences.append(FenceDevice(argv[2], argv[3],
                                      tuple(p for p in pairs if p[0] != "pcmk_host_map"),
                                      host_map, ops))
        elif head == ["resource", "create"]:
            params, ops = _split_ops(argv[4:])
            primitives[argv[2]] = Primitive(argv[2], argv[3], _pairs(params), ops)
        elif argv[:3] == ["resource", "group", "add"]:
            for rid in argv[4:]:
                if rid not in primitives:
                    raise ScriptParseError(f"group {argv[3]} adds {rid}, which is not created")
                groups.setdefault(argv[3], []).append(primitives[rid])
                grouped.add(rid)
        elif head == ["resource", "meta"]:
            metas.setdefault(argv[2], []).extend(_pairs(argv[3:]))
        elif head == ["constraint", "location"] and argv[3] == "prefers":
            node, score = argv[4].split("=", 1)
            locations.append(Location(argv[2], node, score))
        elif head == ["constraint", "colocation"] and argv[2] == "add":
            opts = dict(_pairs(argv[6:]))
            colocations.append(Colocation(argv[3], argv[5], opts.get("score", "INFINITY")))
        elif head == ["constraint", "order"]:
            opts = dict(_pairs(argv[7:]))
            orders.append(Order(argv[2], argv[3], argv[5], argv[6], opts.get("kind", "Mandatory"),
                                opts.get("symmetrical", "true") == "true"))
        elif argv[:3] == ["resource", "defaults", "update"]:
            rsc_defaults.update(_pairs(argv[3:]))
        elif argv[:4] == ["resource", "op", "defaults", "update"]:
            op_defaults.update(_pairs(argv[4:]))
        elif head == ["alert", "create"]:
            opts = dict(_pairs(argv[2:]))
            alerts.append(Alert(opts["id"], opts["path"]))
        else:
            raise ScriptParseError(f"unrecognised pcs command: {line}")
    if corosync is None:
        raise ScriptParseError("the script has no `pcs cluster setup` line")
    if loose := sorted(set(primitives) - grouped):
        raise ScriptParseError(f"resource {loose[0]} is outside any group")
    if qdevice is not None:
        corosync = dataclasses.replace(corosync, two_node=False, qdevice=qdevice)
    corosync = dataclasses.replace(corosync, expected_votes=expected_votes)
    return ClusterModel(
        corosync=corosync, nodes=tuple(nodes), fence_devices=tuple(fences),
        groups=tuple(Group(gid, tuple(members), tuple(metas.get(gid, ())))
                     for gid, members in groups.items()),
        locations=tuple(locations), colocations=tuple(colocations), orders=tuple(orders),
        properties=tuple(props.items()), resource_defaults=tuple(rsc_defaults.items()),
        op_defaults=tuple(op_defaults.items()), alerts=tuple(alerts),
    )


def _parse_qdevice(words: list[str]) -> QuorumDevice:
    if "model" not in words or "heuristics" not in words:
        raise ScriptParseError(f"unexpected quorum device options {words!r}")
    model, cut = words.index("model"), words.index("heuristics")
    generic, model_opts = dict(_pairs(words[:model])), dict(_pairs(words[model + 2:cut]))
    heuristics = _pairs(words[cut + 1:])
    return QuorumDevice(model_opts["host"], model_opts["algorithm"],
                        int(generic.get("timeout", 10000)),
                        tuple((k[len("exec_"):], v) for k, v in heuristics
                              if k.startswith("exec_")))


def _parse_setup(words: list[str]) -> tuple[Corosync, list[ClusterNode]]:
    name, rest = words[0], words[1:]
    nodes: list[ClusterNode] = []
    while rest and rest[0] not in ("transport", "totem", "quorum"):
        node, rest = rest[0], rest[1:]
        addrs = []
        while rest and rest[0].startswith("addr="):
            addrs.append(rest[0][5:])
            rest = rest[1:]
        if len(addrs) != 2:
            raise ScriptParseError(f"node {node} must have two knet addresses, has {addrs}")
        nodes.append(ClusterNode(node, len(nodes) + 1, addrs[0], addrs[1],
                                 f"PREP_HA_INSTANCE_ID_{len(nodes) + 1}"))
    transport = rest[rest.index("transport") + 1] if "transport" in rest else "knet"
    totem = rest[rest.index("totem"):] if "totem" in rest else []
    opts = dict(w.split("=", 1) for w in totem if "=" in w)
    retransmits = opts.get("token_retransmits_before_loss_const")
    corosync = Corosync(name, transport, int(opts.get("token", 3000)),
                        int(opts.get("consensus", 3600)), len(nodes) == 2,
                        knet=_parse_links(rest),
                        token_retransmits=int(retransmits) if retransmits else None)
    return corosync, nodes


def _parse_links(words: list[str]) -> Knet | None:
    """The knet settings: the transport's link_mode and the `link` options' ping settings
    (the renderer gives every link the same)."""
    transport = words[words.index("transport"):] if "transport" in words else []
    mode = next((w.split("=", 1)[1] for w in transport[:3] if w.startswith("link_mode=")),
                "passive")
    seen: list[Knet] = []
    for i, word in enumerate(words):
        if word != "link":
            continue
        opts: dict[str, str] = {}
        for w in words[i + 1:]:
            if "=" not in w:
                break
            k, v = w.split("=", 1)
            opts[k] = v
        try:
            seen.append(Knet(mode, int(opts["ping_interval"]), int(opts["ping_timeout"]),
                             int(opts["pong_count"])))
        except (KeyError, ValueError) as e:
            raise ScriptParseError(f"link options {opts!r} lack a knet ping setting: {e}") from e
    if len(set(seen)) > 1:
        raise ScriptParseError(f"the links have different knet ping settings: {seen}")
    return seen[0] if seen else None
