"""Raw-format adapters: each module turns one public dataset format into the canonical dataset."""
