"""Reading and writing volumes, datasets, splits, preprocessing, slice sampling and the phantom."""
