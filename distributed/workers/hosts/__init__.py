"""Hosts: other machines running ComfyUI with this extension, whose local workers this master uses.

On the host, `inventory` answers the managing master: its GPUs and local workers (`report`), and
one more worker per GPU. On the managing master, `sync` polls each host and keeps the host's workers
in the registry as managed entries, and `relay` carries the panel's actions on them to the host.
"""
