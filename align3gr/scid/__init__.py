"""The SCID vocabulary every stage shares: the code tables, the token format and the vocabulary extension."""

INIT_METHODS = ("mean", "text")
"""How the embedding rows of new SCID tokens start (`align3gr.scid.vocabulary.extend_vocabulary`); named here so that
listing the SFT options does not import torch."""
