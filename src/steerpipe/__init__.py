"""steerpipe: a cached DVC pipeline for steering the reasoning of language models.

The library holds what the stages in ``stages/`` share; each stage imports only what it runs
(dvc.yaml lists exactly those modules as its deps). By concern:

- parameters and stages: ``config`` (typed params.yaml sections, stage paths, clear errors),
  ``storage`` (atomic outputs: Parquet, JSON, safetensors), ``plots`` (the reports' CSV and PNG)
- the model: ``models`` (loading; ``ModelParams``), ``gpus`` (which GPU a stage takes),
  ``memory`` (batch sizes that fit, halving after out-of-memory), ``hooks`` (TransformerLens
  hook points on the plain HF model)
- experiment A, steering vectors: ``steps`` (the data set's schema and problems),
  ``step_traces`` (the model writes and the rules label its own traces), ``labels`` (the rule
  labeller), ``prompts`` (prompt reconstruction, example choice; ``PrepareParams``),
  ``activations`` (resid_pre capture), ``generation`` (batched steered sampling;
  ``SamplingParams``), ``cells`` (sweep cells, the best one)
- judging and Claude: ``judge`` (rule and Claude judges; ``JudgeParams``), ``batches`` and
  ``batch_store`` (resumable, cached Message Batches), ``claude_labels`` (steps labelled by
  Claude)
- experiment B, transcoders: ``transcoders`` (the module and its hooks), ``transcoder_formats``
  (other libraries' files), ``transcoder_sets`` (folders, circuit-tracer sets, the hub),
  ``transcoder_training`` (training one; the fidelity gate), ``yesno`` (Yes/No questions),
  ``neurons`` (sparse feature rows, reasoning/memory masks; ``TracesParams``),
  ``feature_tracing`` (features over generation, steering by features)
- results: ``stats`` (Wilson intervals, Fisher), ``summary`` (the headline lines)

The presets and the stand-ins of real models are in the separate package ``steerpipe_presets``.
"""

__version__ = "0.1.0"
