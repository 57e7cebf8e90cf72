"""The `evaluate` stage: rank items for every user of a split with a constrained decoder and score the lists."""
