"""Replacing one node: the `retire` and `rejoin` steps of the bootstrap script.

Both run on the node that stays, through pcsd, while it keeps the peer running:
- `retire NODE` before NODE's instance is deleted: standby (Peer moves here if NODE held it),
  then `pcs cluster node remove`, so the instance leaves the cluster without being fenced.
- `rejoin NODE` once the new instance is ready: `pcs cluster node add` (corosync.conf, keys
  and the quorum device certificate go to it), and NODE comes back as the citizen.

One node at a time: `retire` takes a lock in the CIB (an nvpair created with a fixed id, which
the CIB refuses to create twice), `rejoin` releases it; a second retire while another node is
out is refused with nothing changed.
"""

from __future__ import annotations

import shlex

from prep_ha.cluster.model import PEER_GROUP, ClusterModel

LOCK_SET = "prep-ha-replacement"
LOCK_NAME = "prep-ha-replacing"
WAIT_S = 300

# Reads `crm_mon --output-as=xml` on stdin; argv: NODE HERE GROUP. Prints four words: NODE's
# state (online, standby, offline, unclean or absent), HERE's state, whether the cluster has
# quorum (yes/no), and the node where every member of GROUP is started ("-" if none).
NODE_FACTS = """
import sys
import xml.etree.ElementTree as ET
node, here, group = sys.argv[1:4]
root = ET.fromstring(sys.stdin.read())
members = {n.get("name"): n for n in root.iter("node") if n.get("type") == "member"}
def state(name):
    n = members.get(name)
    if n is None:
        return "absent"
    if n.get("online") != "true":
        return "unclean" if n.get("unclean") == "true" else "offline"
    return "standby" if n.get("standby") == "true" else "online"
dc = root.find("summary/current_dc")
quorate = "yes" if dc is not None and dc.get("with_quorum") == "true" else "no"
where = set()
for g in root.iter("group"):
    if g.get("id") == group:
        for r in g.findall("resource"):
            on = [x.get("name") for x in r.findall("node")] if r.get("active") == "true" else []
            where.add(on[0] if len(on) == 1 and r.get("role") == "Started" else "-")
print(state(node), state(here), quorate, where.pop() if len(where) == 1 else "-")
"""


# Reads pcsd's known-hosts (the token `pcs host auth` just stored); argv: NODE. Asks NODE's
# pcsd for its versions (/remote/get_sw_versions, as pcs's own GUI does) and compares them
# with this node's: pcs 0.11 supports only Pacemaker 2.1 and pcs 0.12 only Pacemaker 3, so a
# pair never mixes Debian releases (a new instance booted from a newer AMI than its partner).
# Prints the mismatch and exits 3; exits 1 with the error when it cannot compare (pcsd not
# answering, a version it cannot read); nothing when both run the same stack.
SAME_STACK = """
import json, re, ssl, subprocess, sys, urllib.request
node = sys.argv[1]
known = json.load(open("/var/lib/pcsd/known-hosts"))["known_hosts"][node]
dest = known["dest_list"][0]
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # pcsd's own certificate
request = urllib.request.Request(f"https://{dest['addr']}:{dest['port']}/remote/get_sw_versions",
                                 headers={"Cookie": f"token={known['token']}"})
with urllib.request.urlopen(request, timeout=30, context=context) as response:
    theirs = json.load(response)
def version(argv):
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    return [int(x) for x in re.search(r"(\\d+)\\.(\\d+)\\.(\\d+)", out).groups()]
mine = {"pcs": version(["pcs", "--version"]), "pacemaker": version(["pacemakerd", "--version"])}
def line(v):
    return ("pcs " + ".".join(map(str, v["pcs"] or [])) + ", Pacemaker "
            + ".".join(map(str, v["pacemaker"] or [])))
if (theirs.get("pcs") or [])[:2] != mine["pcs"][:2] \\
        or (theirs.get("pacemaker") or [])[:1] != mine["pacemaker"][:1]:
    print(f"{node} runs {line(theirs)}, this node {line(mine)}")
    sys.exit(3)
"""


def membership_functions(model: ClusterModel) -> str:
    """The bash functions `retire` and `rejoin` (and their helpers) of the bootstrap script."""
    addresses = "\n".join(
        f"    {shlex.quote(n.name)}) echo {shlex.quote(f'addr={n.heartbeat_ip}')} "
        f"{shlex.quote(f'addr={n.service_ip}')} ;;" for n in model.nodes)
    names = " ".join(n.name for n in model.nodes)
    device = model.corosync.qdevice
    # `pcs cluster node add` sets up the new node's qdevice certificate through the arbiter's
    # pcsd, which a node added earlier (a replaced one) has never authenticated to.
    arbiter_auth = (f"\n      pcsd_auth {shlex.quote(device.host)}" if device else "")
    lock = (f'<cluster_property_set id="{LOCK_SET}"><nvpair id="{LOCK_SET}-node" '
            f'name="{LOCK_NAME}" value="%s"/></cluster_property_set>')
    return f"""NODE_FACTS={shlex.quote(NODE_FACTS)}
SAME_STACK={shlex.quote(SAME_STACK)}

# knet_addresses NODE: its corosync link addresses, as `pcs cluster setup` gave them.
knet_addresses() {{
  case "$1" in
{addresses}
    *) echo "unknown node $1 (the nodes are: {names})" >&2; return 1 ;;
  esac
}}

# pcsd_auth_node NODE: authenticate to NODE's pcsd at its heartbeat address (link 0).
pcsd_auth_node() {{
  local addrs
  addrs=$(knet_addresses "$1")
  pcsd_auth "$1" "${{addrs%% *}}"
}}

# this_node: the cluster's name for this node (its hostname when no cluster runs here).
this_node() {{
  crm_node --name 2>/dev/null || hostname
}}

# node_facts NODE: "NODE's state, this node's state, quorate, where Peer runs" (NODE_FACTS).
node_facts() {{
  crm_mon --one-shot --output-as=xml 2>/dev/null \
    | python3 -c "$NODE_FACTS" "$1" "$(this_node)" {PEER_GROUP} || echo "absent absent no -"
}}

replacing() {{
  crm_attribute --type crm_config --set-name {LOCK_SET} --name {LOCK_NAME} --query --quiet \
    2>/dev/null || true
}}

release_replacement() {{
  cibadmin --delete --xml-text '<cluster_property_set id="{LOCK_SET}"/>' >/dev/null 2>&1 || true
}}

refuse() {{
  echo "$1: refused, nothing changed: $2" >&2
  exit 1
}}

# retire_failed NODE WHAT-CHANGED: a step failed half-way (set -e stops the script after it).
retire_failed() {{
  release_replacement
  echo "retire $1 failed half-way ($2); the replacement lock is released: check \
\\`pcs status --full\\`, then run \\`pulumi up\\` again" >&2
}}

wait_online() {{
  local deadline=$((SECONDS + {WAIT_S})) state
  while :; do
    read -r state _ <<<"$(node_facts "$1")"
    [ "$state" = online ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$1 is $state, not online, after {WAIT_S} s" >&2
      return 1
    fi
    sleep 5
  done
}}

retire() {{
  local node="$1" here state mine quorate peer changed="nothing changed"
  knet_addresses "$node" >/dev/null
  here=$(this_node)
  [ "$node" != "$here" ] || refuse "retire $node" "it runs on the node that stays, not on $node"
  read -r state mine quorate peer <<<"$(node_facts "$node")"
  # Both nodes at once: the second retire runs on a node already taken out (or, at the same
  # time, loses the lock below).
  [ "$mine" = online ] || refuse "retire $node" "$here is no online cluster member ($mine): \
replace one node at a time"
  # The CIB creates an element with a given id once: of two retires, one takes the lock.
  if ! cibadmin --create --scope crm_config \
      --xml-text "$(printf '{lock}' "$node")" >/dev/null 2>&1 \
      && [ "$(replacing)" != "$node" ]; then
    refuse "retire $node" "$(replacing) is being replaced: replace one node at a time"
  fi
  read -r state mine quorate peer <<<"$(node_facts "$node")"
  # A node that has just died is fenced first (and the peer recovered): wait for that.
  local deadline=$((SECONDS + {WAIT_S}))
  while [ "$state" = unclean ] && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 5
    read -r state mine quorate peer <<<"$(node_facts "$node")"
  done
  if [ "$mine" != online ] || [ "$quorate" != yes ]; then
    release_replacement
    refuse "retire $node" "$here, the node that stays, is $mine (quorum: $quorate)"
  fi
  trap 'retire_failed "$node" "$changed"' ERR
  case "$state" in
    absent)
      echo "$node is no cluster member: nothing to retire" ;;
    online|standby)
      if [ "$state" = online ]; then
        pcs node standby "$node" --wait={WAIT_S} || true
        changed="$node is in standby: \\`pcs node unstandby $node\\` undoes it"
      fi
      read -r _ mine quorate peer <<<"$(node_facts "$node")"
      if [ "$peer" != "$here" ]; then
        [ "$state" = standby ] || pcs node unstandby "$node" || true
        release_replacement
        echo "retire $node: refused: {PEER_GROUP} did not start on $here (it runs on: $peer); \
the standby is undone, the peer may have been interrupted" >&2
        exit 1
      fi
      pcs cluster node remove "$node" ;;
    offline)
      if [ "$peer" != "$here" ]; then
        release_replacement
        refuse "retire $node" "{PEER_GROUP} does not run on $here (it runs on: $peer)"
      fi
      # pcs cannot ask a node that is down whether removing it loses quorum; this node has
      # quorum and the peer (checked above), and removing a down node takes no vote away.
      pcs cluster node remove "$node" --skip-offline --force ;;
    *)
      release_replacement
      refuse "retire $node" "$node is still $state after {WAIT_S} s: is fencing failing?" ;;
  esac
  trap - ERR
  [ "$state" = absent ] || echo "$node retired: {PEER_GROUP} runs on $here, $node left the \
cluster; rejoin follows"
}}

rejoin() {{
  local node="$1" addrs state mine quorate _peer
  addrs=$(knet_addresses "$node")
  read -r state mine quorate _peer <<<"$(node_facts "$node")"
  case "$state" in
    online|standby) ;;  # a member (a standby the operator set stays as it is)
    *)
      pcsd_auth_node "$node"{arbiter_auth}
      local mismatch=""
      mismatch=$(python3 -c "$SAME_STACK" "$node" 2>&1) || case $? in
        3) refuse "rejoin $node" "a pair never mixes Debian releases: $mismatch; move the \
pair as the README says (Moving to a new Debian release)" ;;
        *) refuse "rejoin $node" "could not compare its pcs and Pacemaker versions with \
this node's ($(printf '%s' "$mismatch" | tail -n 1)): is its pcsd running?" ;;
      esac
      if grep -Eq "^\\s*name: $node\\s*$" "$COROSYNC_CONF"; then
        if pcs cluster corosync "$node" >/dev/null 2>&1; then
          refuse "rejoin $node" "$node is configured and its cluster stopped: start it \
(pcs cluster start $node) or replace its instance"
        fi
        # A new instance under a configured name (no retire ran before it: a stack deployed
        # before replacement existed): taken out first, with retire's checks.
        if [ "$state" != offline ] || [ "$mine" != online ] || [ "$quorate" != yes ]; then
          refuse "rejoin $node" "$node is $state, this node $mine (quorum: $quorate)"
        fi
        pcs cluster node remove "$node" --skip-offline --force
      fi
      # shellcheck disable=SC2086 # two addr= words
      pcs cluster node add "$node" $addrs --start --enable --wait={WAIT_S}
      wait_online "$node" ;;
  esac
  [ "$(replacing)" = "$node" ] && release_replacement
  echo "$node is a cluster member"
}}
"""
