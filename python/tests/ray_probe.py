"""Prints how many nodes of the Ray cluster at argv[1] are alive (test_ray.py waits on it)."""
import sys

import ray

ray.init(address=sys.argv[1], log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
