"""The only code that touches files: volumes, input hashes, shards, published versions.

Shards are Blosc-LZ4 compressed: `pipelines.io.shards` registers hdf5plugin's filters for every
SpineForge reader; plain h5py readers need `import hdf5plugin` first.
"""
