"""steerpipe_presets: the papers' settings as one command each, and offline stand-ins for them.

Not part of the pipeline's runtime: no stage imports this package, so editing it re-runs
nothing. ``presets`` runs a preset (``presets/<name>.yaml``) as a ``dvc exp run``, or its dry
run on stand-ins; ``standins`` writes those stand-ins (random models of the real
architectures with the real chat templates in ``templates/``, data in the real schemas,
transcoders in the real formats) for the dry runs, the tests and the benchmarks.
"""
