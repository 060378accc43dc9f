"""steerpipe: a cached DVC pipeline for steering the reasoning of language models.

The stage scripts in ``stages/`` read their parameters and call this library; dvc.yaml lists,
for each stage, exactly the modules it imports (``scripts/write_deps.py`` writes them). One
folder per concern, each importing only the ones before it:

- ``steerpipe`` itself: ``config`` (typed params.yaml sections, stage arguments, clear
  errors), ``storage`` (outputs written whole or not at all), ``plots``, ``stats`` (intervals
  and tests), ``gym`` (reasoning-gym's packaged questions)
- ``lm``: the language model (loading, GGUF, GPUs, batch sizes, TransformerLens hook points,
  generation, sampling noise, activation capture, chat prompts)
- ``claude``: Claude's Message Batches, their answer store, the step labeller
- ``steering``: experiment A (the steps data set, labels, prepared examples, sampling, the
  sweep and its logprob metric, the steer conditions, the judge, full solutions)
- ``transcoders``: experiment B (the transcoder, other libraries' formats and sets, training,
  Yes/No questions, feature traces, reasoning and memory neurons, their evaluation); it uses
  nothing of ``steering``
- ``results``: the reports' statistics and plots, the headline summary, replication over seeds

The presets and the stand-ins of real models are the separate package ``steerpipe_presets``.
"""

__version__ = "0.1.0"
