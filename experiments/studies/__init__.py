"""Three offline studies of RMSprop's claimed strengths and weaknesses.

* :mod:`experiments.studies.adding_problem`: recurrent networks (LSTM on the adding problem).
* :mod:`experiments.studies.nonstationary`: online regression on a drifting, jumping teacher.
* :mod:`experiments.studies.sparse_features`: an embedding table over Zipf-distributed features.

Each is one command, ``python -m experiments.studies.<name> --config configs/studies/<name>.py``,
and writes ``summary.json``, ``summary.md`` and PNG plots to ``runs/<name>/``.
"""
