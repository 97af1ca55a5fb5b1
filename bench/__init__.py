"""Benchmarks of the batch restart against a bare paramiko floor and Ansible (see bench/README.md).

Not part of the tests: run ``python3 -m bench.run --hosts 10,50,100`` from the repository root.
"""
