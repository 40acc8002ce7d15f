"""GGUF files: the header, the unpacking to transformers and its cache, the export of a directory."""
