"""Speed and memory benchmarks for tsf (run from the repository root: `python -m benchmarks.run_all`).

Not part of the installed package: the scripts measure the installed `tsf` from the outside,
through its commands and public functions. See benchmarks/README.md.
"""
