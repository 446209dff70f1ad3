"""The package's one logger, ``logging.getLogger("labkit")``.

Background events (a managed cluster's processes starting and stopping, batch runs
submitted again) go here rather than to stdout; a Jupyter server or a notebook decides
what to show with ``logging.getLogger("labkit").setLevel(...)``.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("labkit")
