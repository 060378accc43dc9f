"""The language model: loading it, hooking it at TransformerLens's points, generating, capturing.

``models`` (``ModelParams``; the packaged SmolLM2, hub ids, folders), ``gguf_weights`` (GGUF
files as cached HF folders), ``gpus`` (which GPU a stage takes), ``batch_sizes`` (batches that
fit the free memory, halved after out-of-memory), ``hooks`` (TransformerLens hook points on the
plain HF model, steering vectors), ``generation`` (batched generation with per-row steering),
``noise`` (sampling noise keyed by row), ``activations`` (``hook_resid_pre`` capture),
``chat`` (chat prompts).
"""
