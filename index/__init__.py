"""lsr.index: Seismic-style blocked inverted index, exact index, on-disk format. No torch here."""
