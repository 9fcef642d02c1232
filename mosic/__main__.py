"""``python -m mosic``: the same as the ``mosic`` command."""

from mosic.cli import app

app()
