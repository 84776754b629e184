"""``python -m tinyddpm.demo``: the whole story of the slides in one minute (coming soon)."""
import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinyddpm.demo", description=__doc__)
    parser.parse_args(argv)
    print("tinyddpm demo: coming soon. The engine is ready: see README.md for what works today.")


if __name__ == "__main__":
    main()
