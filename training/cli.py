import sys


def main():
    print("tsf-train: not implemented yet", file=sys.stderr)
    sys.exit(2)
