"""`python -m tracklayer_mw` is the `tracklayer` command."""

from tracklayer_mw.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
