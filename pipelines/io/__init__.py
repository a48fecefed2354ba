"""The only code that touches files: volumes, shards, published versions.

Importing this package registers hdf5plugin's filters: shards are Blosc-LZ4 compressed, so any
reader (h5py included) needs `import hdf5plugin` first.
"""
import hdf5plugin  # noqa: F401
