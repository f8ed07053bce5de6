"""A directory of image files is a pool; its regular files are its volumes.

Works over any ``Transport``: the listing and probing happen in the transport's
scanner (in-process locally, one round trip remotely), and ``listing`` turns its plain
records into model objects.

Operations that make a new file (create, copy, clone, restore, and an archive outside
the pool) write it under a temporary name (``TEMP_PREFIX``) and publish it whole; resize,
growfs, a wipe and a restore into an existing volume change a volume in place, under the
job's lock; a snapshot renames a new overlay over the disk, atomically.

``driver.DirDriver`` is the ``Driver`` for directory pools; each operation lives in a
module of its own (``create``, ``resize``, ``copies``, ``snapshots``, ``archives``,
``restores``, ``deletion``, ``inspection``), on a few shared pieces: ``names`` (volume
names, backing references, how errors name a volume), ``temporaries`` (temporary names,
publishing, leftovers), ``commands`` (running qemu-img and reading its failures),
``guards`` (refusals before anything changes) and ``progress``.
"""
