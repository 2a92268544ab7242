"""Ledger replication: the active's change log served to the standby, which follows it
(docs/interfaces.md, Replication; the design: the change log in scheduler/changelog.py).

fork.py    where two logs part (from their terms and heads)
source.py  the active's side: the /v1/replication endpoints, their own token
waiter.py  sync mode: a write is answered once the follower's ack covers it
follower.py the standby's side: follow the active, apply its entries, mirror output
"""
