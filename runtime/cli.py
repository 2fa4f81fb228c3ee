import sys


def main():
    print("tsf-extract: not implemented yet", file=sys.stderr)
    sys.exit(2)
