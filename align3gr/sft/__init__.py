"""Behaviour-level alignment (Align3GR, Figure 3): SCID vocabulary extension and multi-task SFT."""
