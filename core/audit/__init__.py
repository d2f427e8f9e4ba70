"""The audit trail: one hash-chained, append-only record per request.

:mod:`.record` defines a record and its canonical encoding, :mod:`.chain`
appends records to a workspace's chain, :mod:`.writer` batches appends and
falls back to :mod:`.spool` when the database is unreachable, :mod:`.verify`
and :mod:`.export` read the chain back.
"""
