"""Behaviour-level alignment (seed 003, Figure 3): SCID vocabulary extension and multi-task SFT."""
