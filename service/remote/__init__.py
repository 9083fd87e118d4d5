"""The remote ``hwnas`` commands: the service over HTTP, from any host.

Jobs: ``submit``, ``jobs``, ``watch``, ``cancel``, ``delete``, ``extend``, ``trials``.
Results: ``pareto`` (with a legend of its flags and the summary notation), ``best``, ``report``
(the HTML page into a file), ``pull`` (a model bundle, unpacked). Data: ``upload`` (an .npz
dataset). The account: ``me``, ``tokens list | create | revoke``.

Every command takes ``--url`` (``HWNAS_URL``, default http://127.0.0.1:8000) and a token:
``--token``, ``--token-file``, ``HWNAS_TOKEN`` or ``HWNAS_TOKEN_FILE``, first found (a file or the
environment keeps it out of the process list). Read commands take ``--json`` for the API's own
JSON. Exit status 0 on success, 1 when a watched job ended not succeeded, 2 when the service
refused, could not be reached or the input was bad (one ``error: ...`` line, no traceback).
"""

from service.remote.commands import add_commands

__all__ = ["add_commands"]
