"""Pure operations on arrays and affines: no Prefect, no paths, no h5py."""
