"""The SCID vocabulary every stage shares: the code tables, the token format and the vocabulary extension."""
