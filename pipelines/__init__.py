"""SpineForge: spine CT collections in, versioned HDF5 training datasets out."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spineforge")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"

# Packages whose data shape sample content (tube spectra, attenuation tables): their versions take
# part in cache keys and build ids beside the code's, and are recorded in the dataset card.
PHYSICS_DATA_PACKAGES = ("spekpy", "xraylib")


def physics_data_versions() -> dict[str, str]:
    return {name: version(name) for name in PHYSICS_DATA_PACKAGES}


def content_version() -> str:
    """What sample content depends on besides inputs and config: this code and the physics data."""
    return ";".join([__version__, *(f"{k}=={v}" for k, v in physics_data_versions().items())])
