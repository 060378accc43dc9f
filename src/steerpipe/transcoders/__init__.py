"""Experiment B: reasoning and memory neurons of a transcoder (nothing of experiment A here).

``transcoder`` (the module, its hooks, feature steering, our file format), ``formats`` (other
libraries' files), ``sets`` (folders, circuit-tracer's sets, the hub), ``training``
(``TranscoderParams``; training one), ``fidelity`` (how well one stands in for its MLP; the
traces stage's gate), ``yesno`` (Yes/No questions, their prompts and answers), ``traces``
(``TracesParams``; features over generation), ``neurons`` (sparse feature rows, the masks, the
matched control), ``neuron_eval`` (``NeuronEvalParams``; answers with the neurons scaled).
"""
