"""Elastic pools: workers the master starts when work waits and stops when idle, within a budget.

`commands` runs a pool's start and stop commands; `ledger` records members and member-hours in the
master's state folder; `policy` decides, from plain numbers, whether a pool may grow or must shrink;
`manager` runs the life cycle of every member (docs/elastic-workers.md).
"""
