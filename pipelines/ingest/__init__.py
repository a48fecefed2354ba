"""Discovery, naming normalisation, label translation and QC of input collections."""
