"""Preference-level alignment (Align3GR Eq. 3, Table 5): the Softmax-DPO trainer and its progressive stages."""
