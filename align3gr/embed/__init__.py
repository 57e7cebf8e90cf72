"""The `embed` stage: frozen semantic embeddings of item and user text, and collaborative embeddings."""
