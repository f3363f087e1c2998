"""Model bundles: ``duplus export`` / ``import`` / ``models`` and the ``-c VALUE`` resolver.

:mod:`.archive` is the file format (a leaf: checkpoint loading reads bundles through it);
:mod:`.export` makes a bundle from a checkpoint or adapter; :mod:`.store` installs bundles under
``$DUPLUS_HOME/models`` and resolves ``-c`` values.
"""
