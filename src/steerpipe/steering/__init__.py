"""Experiment A: a steering vector that makes the model conclude instead of verify.

In pipeline order: ``steps`` (the data set's schema), ``generated_steps`` (``StepsParams``; the
model writes its own traces), ``labels`` (the rule labeller), ``prepare`` (``PrepareParams``;
a labelled step's prompt, the seeded choice, the split), ``sampling`` (``SamplingParams``;
conditions sharing batches), ``sweep`` (``SweepParams``; cells, the best one), ``logprob``
(the sweep's teacher-forced metric), ``steer`` (``SteerParams``; the cell's vector, controls,
doses), ``judge`` (``JudgeParams``; rule and Claude judges), ``solutions`` (``SolveParams``;
full solutions) and ``answers`` (reading and checking their final answers).
"""
