"""Steps 4-7 for one case: resample, crop, sample pairs and poses, render, stage its samples."""
