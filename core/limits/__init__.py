"""Rate limits: the limit models, the Redis limiter and the in-process one.

The ``rate_limit`` stage (``stages/rate_limit.py``) resolves a workspace's
declared limits into :class:`~sluicegate.core.limits.spec.Check` values for one
request and asks a limiter to admit them all at once.
"""
