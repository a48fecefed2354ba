"""SpineForge: spine CT collections in, versioned HDF5 training datasets out."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spineforge")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
