"""Token and cost budgets: prices, estimates, windows, reservations, the ledger.

The ``budget`` stage (:mod:`sluicegate.stages.budget`) puts these together:
before a request it estimates the most the request can cost and reserves it
against every applicable budget at once (:mod:`.redis_store`, or
:mod:`.sql_store` without Redis); after it, the reservation becomes the real
cost, written once to the usage ledger (:mod:`.ledger`), the source of truth.
"""
