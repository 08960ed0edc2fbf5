"""``python -m shmipc``: the command line (see :mod:`shmipc.cli`)."""

from shmipc.cli import main

raise SystemExit(main())
