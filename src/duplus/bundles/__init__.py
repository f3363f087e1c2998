"""Model bundles: ``duplus export`` / ``import`` / ``models`` and the ``-c VALUE`` resolver.

The file format lives lower down, in :mod:`duplus.bundle_file` (checkpoint loading reads bundles
through it); :mod:`.export` makes a bundle from a checkpoint or adapter; :mod:`.store` installs
bundles under ``$DUPLUS_HOME/models`` and resolves ``-c`` and ``--adapter`` values.
"""
