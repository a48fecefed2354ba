"""One case (docs/design.md, step 2): resample, crop, sample pairs and poses, render, stage its samples."""
