"""Provisioning workers with what a workflow needs: which model files each has (`inventory`), copying
the missing ones from the master (`sender` on the master, `store` on the worker), and a set-up
script built from the workflow's own model metadata and the master's node packs (`setup_plan`,
`script`). docs/models.md describes the whole.
"""
