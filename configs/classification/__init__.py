"""Configs of the classification jobs: the comparison (compare.py) and one optimizer (train.py)."""
