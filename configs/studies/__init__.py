"""Configs of the recurrent, non-stationary and sparse studies (experiments.studies)."""
