"""Log output for twistd's ``--logger`` option.

    twistd --logger=siprecd.logs.json -n siprec --config /etc/siprecd/siprecd.conf

writes one JSON object per event (``twisted.logger`` fields: ``log_namespace``, ``log_level``,
``log_format``, and the event's own fields such as ``session_id`` and ``call_id``) to standard
output, for journald or a log shipper.  Without ``--logger`` twistd writes plain text.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json() -> ILogObserver:
    return jsonFileLogObserver(sys.stdout)
