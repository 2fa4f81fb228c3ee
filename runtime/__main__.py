"""`python -m tsf.runtime ...` is `tsf-extract ...`."""
from .cli import main

main()
