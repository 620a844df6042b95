"""Scale-out on Ray (the optional ``cluster`` extra): collections sharded by document id over
replicated Ray actors that each own a normal lsr collection folder, and Ray Data encoding.

Modules: :mod:`.store` (the coordinator the service uses in place of its local store),
:mod:`.replica` (the shard replica actor), :mod:`.encode` (Ray Data ``map_batches`` encoding),
:mod:`.runtime` (connecting to Ray on loopback), :mod:`.cli` (``--cluster`` of the CLIs).
Only this package imports ray; nothing imports it unless ``--cluster`` is used.
"""
