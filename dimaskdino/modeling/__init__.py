"""MaskDINO and DI-MaskDINO: backbone, encoder, DI, BATO, decoder, heads."""
