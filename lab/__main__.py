"""python -m lab {image,up,status,drill,leakscan,bench,down,aws-drill}: see the project README."""

from __future__ import annotations

import argparse
import sys

from lab.cluster import RUN_DIR, Lab, down, missing_tools, running_lab

STACK_FILE = RUN_DIR.with_name(RUN_DIR.name + ".stack")


def _lab(stack: str | None) -> Lab:
    if stack is None:
        if not STACK_FILE.exists():
            raise SystemExit("no lab is up: run `python -m lab up --stack testnet` first")
        stack = STACK_FILE.read_text().strip()
    return Lab.from_stack(stack)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("image", help="build (or reuse) the cached node image, its mirror and the "
                   "nodes' tools the offline tests run")
    up = sub.add_parser("up", help="bring the lab up and leave it running")
    up.add_argument("--stack", default="testnet")
    sub.add_parser("status", help="pcs status of the running lab")
    drill = sub.add_parser("drill", help="run the failover drill on the running lab "
                                         "(or on a fresh one with --stack, torn down after)")
    drill.add_argument("--stack")
    drill.add_argument("--case", action="append", help="heartbeat, service, standby, hang, "
                       "links; platform weather: freeze-active, freeze-standby, api-outage; "
                       "with the arbiter also split, arbiter, arbiter-split, lone-start; "
                       "operations: switchover, upgrade, roll-refused, restore-refused, "
                       "replace, replace-lost, payload-roll, payload-corrupt")
    bench = sub.add_parser("bench", help="failover time, product vs guide settings")
    bench.add_argument("--stack", default="testnet", help="a single-AZ stack")
    bench.add_argument("--multi-az-stack", default="mainnet",
                       help="a multi-AZ stack, measured in the same run ('' for none)")
    bench.add_argument("--node-only", action="store_true",
                       help="only the node takeover: product (both topologies) and guide")
    bench.add_argument("--runs", type=int, default=3)
    bench.add_argument("--tokens", action="store_true",
                       help="instead: the stall each corosync token survives (lab/tokens.py)")
    sub.add_parser("leakscan", help="search the running lab for the keystore and hacluster "
                                    "passwords (see lab/leakscan.py)", add_help=False)
    sub.add_parser("down", help="remove everything the lab made (safe at any time)")
    sub.add_parser("aws-drill", help="drill a deployed stack (see --help)", add_help=False)
    args, rest = ap.parse_known_args(argv)

    if args.command == "aws-drill":
        from lab import aws_drill
        return aws_drill.main(rest)
    if args.command == "leakscan":
        from lab import leakscan
        return leakscan.main(rest)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "down":
        down()
        STACK_FILE.unlink(missing_ok=True)
        return 0
    if missing := missing_tools():
        raise SystemExit(f"missing tools: {', '.join(missing)} (`bash .ci/run` installs them)")
    if args.command == "image":
        from lab.image import ensure_image
        from prep_ha.nodetools import node_tools
        image = ensure_image()
        tools = node_tools()
        print(f"node image: {image.rootfs.parent.name}, mirror {image.mirror.parent.name} "
              f"(until {image.expires:%Y-%m-%d %H:%M} UTC); the nodes' tools (Debian "
              f"{tools.release}) from {tools.where}")
        return 0
    if args.command == "up":
        lab = Lab.from_stack(args.stack)
        STACK_FILE.write_text(args.stack)
        with running_lab(lab, keep=True):
            print(f"lab up in {lab.timings['total']:.1f} s; `python -m lab down` removes it")
            print(lab.pcs_status())
        return 0
    if args.command == "status":
        print(_lab(None).pcs_status())
        return 0
    if args.command == "drill":
        from lab.drill import Drill
        if args.stack:
            with running_lab(Lab.from_stack(args.stack)) as lab:
                results = Drill(lab).run(args.case)
        else:
            results = Drill(_lab(None)).run(args.case)
        failed = [r.name for r in results if not r.passed]
        print(f"drill: {len(results) - len(failed)}/{len(results)} cases passed")
        return 1 if failed else 0
    if args.command == "bench":
        down()
        if args.tokens:
            from lab import tokens
            with running_lab(Lab.from_stack(args.stack)) as lab:
                print(tokens.report(tokens.sweep(lab)))
            return 0
        from lab.bench import bench
        multi = Lab.from_stack(args.multi_az_stack).cfg if args.multi_az_stack else None
        bench(Lab.from_stack(args.stack).cfg, args.runs, multi_az_cfg=multi,
              node_only=args.node_only)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
