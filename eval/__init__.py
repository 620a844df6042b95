"""lsr.eval: BEIR evaluation harness."""
