"""Loading and creating the language models the stages use."""
