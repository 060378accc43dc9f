"""The results: the report stages' statistics and plots, the headline lines, replication.

``report`` (experiment A), ``solve_report`` (full solutions), ``neuron_report``
(experiment B), ``summary`` (what ``scripts/pipeline.sh`` prints last), ``replication``
(experiment A over seeds, from ``dvc exp show``).
"""
