"""Data layer: image I/O, dataset specs and readers, label space, preprocessing, sampling, phantoms."""
