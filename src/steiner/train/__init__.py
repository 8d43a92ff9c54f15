"""Training stages: CPT (`cpt`), SFT (`sft`) and RL (`rl`), each a config dataclass and `main(cfg)`; shared pieces in `common`."""
