"""The one base of the errors a user can fix: each message is one line naming the culprit and
the fix, and each error says whether every rank meets it alike.

A worker (``cohort.train.worker``) prints a *shared* error once, from global rank 0 (every rank
of the cohort raised the same one: a bad config, a damaged checkpoint, a desynchronised
exchange), and an error of one rank's own (its loss went non-finite) from that rank. A
class sets the default; one raise can say otherwise (``NonFiniteError(..., shared=True)``
when the exchange, which every rank reads, found the non-finite logits).
"""

from __future__ import annotations


class CohortError(Exception):
    """A problem a user can fix; ``shared``: every rank meets it alike (rank 0 reports it)."""

    shared: bool = True

    def __init__(self, message: str = "", *, shared: bool | None = None):
        super().__init__(message)
        if shared is not None:
            self.shared = shared
