"""Every real task spec rehearsed end to end with ``--smoke``: miniature data trees in the official
layouts (real bytes from ``../shared/data`` where they exist), fabricated checkpoints in the
official layouts, the method a user would use, the CLI as a user calls it (see ``cases.py``)."""
