"""Runs the `ray` CLI (`ray_loopback.py ray start ...`) or a Python script (`ray_loopback.py SCRIPT ARGS`) with
Ray's rewrite of loopback addresses turned off.

Ray replaces 127.0.0.1 / localhost in `--node-ip-address` and in cluster addresses by the machine's outward
address (services.resolve_ip_for_localhost), so a "local" two-node cluster would talk over that interface.
The tests' cluster must stay on 127.0.0.1: this keeps the address as given.
"""
import runpy
import sys

import ray._private.services as services

services.resolve_ip_for_localhost = lambda host: host

if __name__ == "__main__":
    if sys.argv[1] == "ray":
        from ray.scripts.scripts import main

        sys.argv = sys.argv[1:]
        sys.exit(main())
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
