"""Operator commands: `python -m prep_ha simulate|render --stack NAME` need no cloud;
`python -m prep_ha put-keystore --stack NAME` stores the validator key (prep_ha/keystore.py);
`python -m prep_ha switchover|roll --stack NAME` operate the running pair (prep_ha/ops)."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from prep_ha import keystore
from prep_ha.cluster.model import build_model
from prep_ha.cluster.pcs import render_script
from prep_ha.cluster.simulate import (
    Simulator,
    describe,
    fence_key,
    fencing_failure_report,
    scenarios,
)
from prep_ha.config import ConfigError, StackConfig, load_stack_file
from prep_ha.nodetools import NodeToolsMissing, node_tools
from prep_ha.ops import shell
from prep_ha.ops.pair import Pair
from prep_ha.ops.roll import roll
from prep_ha.ops.switchover import switchover

ROOT = Path(__file__).resolve().parent.parent


def _simulate(model_stack: str) -> int:
    try:
        tools = node_tools()
    except NodeToolsMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = load_stack_file(str(ROOT / f"Pulumi.{model_stack}.yaml"), stack=model_stack)
    model = build_model(cfg)
    version = tools.run(["crm_simulate", "--version"]).stdout.split("\n")[0]
    print(f"Cluster {cfg.cluster_name}: the bootstrap script's CIB, run through Pacemaker's "
          f"scheduler (crm_simulate)\nwith the nodes' Debian {tools.release} tools from "
          f"{tools.where}: {version}\n")
    with Simulator(model, tools=tools) as sim:
        for sc in scenarios():
            print(describe(model, sc.title, sc.explain, sc.run(sim)) + "\n")
        t, blocked = fencing_failure_report(model, sim)
        peer_starts = sorted(k for k in blocked if k.endswith("_start_0") and k.startswith("peer"))
        print("== fencing node 1 fails\n"
              "   Node 1 fails and the EC2 API refuses to stop it. Every Peer start on node 2\n"
              f"   waits for {fence_key(model, sim.node1)}, so none of them runs: "
              f"{', '.join(peer_starts)}\n"
              "   -> Peer: not started anywhere until fencing succeeds (never on two nodes)")
    return 0


def _operate(cfg: StackConfig, args: argparse.Namespace) -> int:
    if getattr(args, "key_stdin", False):
        context = shell.from_environment(os.environ, sys.stdin.read())
    else:
        context = nullcontext(shell.from_stack(cfg.stack, cfg.cluster_name,
                                               list(cfg.node_names)))
    with context as nodes:
        the_pair = Pair(nodes, cfg, echo=lambda line: print(line, flush=True))
        if args.command == "switchover":
            switchover(the_pair)
        else:
            roll(the_pair, args.image or cfg.icon_image, dict(args.payload or []))
    return 0


def _node_digest(text: str) -> tuple[str, str]:
    node, sep, digest = text.partition("=")
    if not (node and sep and digest):
        raise argparse.ArgumentTypeError(f"{text!r} is not NODE=SHA256")
    return node, digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prep_ha", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("simulate", "show each failover scenario as Pacemaker plans it"),
                       ("render", "print the bootstrap script the stack would run")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--stack", required=True, help="stack name, e.g. testnet or mainnet")
    put = sub.add_parser("put-keystore", help="store the P-Rep keystore and its password in "
                         "the stack's Secrets Manager secrets (asks for the password)")
    put.add_argument("--stack", required=True, help="stack name, e.g. testnet or mainnet")
    put.add_argument("--keystore", help=f"the keystore file (or ${keystore.KEYSTORE_ENV})")
    put.add_argument("--password-file", help="a file only you can read holding the password "
                     f"(or ${keystore.PASSWORD_FILE_ENV}); without it the password is asked")
    put.add_argument("--if-unset", action="store_true",
                     help="do nothing if both secrets already hold a value")
    sub.add_parser("switchover", help="move Peer to the other node (planned, no fencing)"
                   ).add_argument("--stack", required=True, help="stack name")
    roll_p = sub.add_parser("roll", help="roll the stack's ICON image and the nodes' payloads "
                            "through the pair (`pulumi up` runs this when either changes)")
    roll_p.add_argument("--stack", required=True, help="stack name")
    roll_p.add_argument("--image", help="default: the stack's iconImageTag")
    roll_p.add_argument("--payload", action="append", type=_node_digest, metavar="NODE=SHA256",
                        help="a node's payload digest (the stack's roll Command names both)")
    roll_p.add_argument("--key-stdin", action="store_true", help="the stack's roll Command: "
                        f"SSH key on stdin, nodes in ${shell.NODES_ENV} and "
                        f"${shell.KNOWN_HOSTS_ENV}")
    args = parser.parse_args(argv)
    try:
        if args.command == "simulate":
            return _simulate(args.stack)
        cfg = load_stack_file(str(ROOT / f"Pulumi.{args.stack}.yaml"), stack=args.stack)
        if args.command == "put-keystore":
            names = keystore.KeySecrets(cfg.keystore_secret_name,
                                        cfg.keystore_password_secret_name, cfg.region)
            return keystore.main(names, args.keystore, args.password_file, args.if_unset)
        if args.command in ("switchover", "roll"):
            return _operate(cfg, args)
        print(render_script(build_model(cfg), hacluster_secret_id=cfg.hacluster_secret_name),
              end="")
        return 0
    except (ConfigError, FileNotFoundError, shell.OpsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
