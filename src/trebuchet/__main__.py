"""`python -m trebuchet`: the demo when given no arguments, else the command-line tool."""

import sys


def _main() -> int | None:
    if len(sys.argv) <= 1:
        from trebuchet.demo import main

        return main()
    from trebuchet.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
