"""Preference-level alignment (seed 003, Eq. 3, Table 5): the Softmax-DPO trainer and its progressive stages."""
