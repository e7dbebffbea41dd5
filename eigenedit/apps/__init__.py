"""User-facing apps: the command line (``cli``), the web UI (``ui``) and batch editing (``batch``)."""
