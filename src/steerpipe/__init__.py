"""steerpipe: a cached DVC pipeline for steering the reasoning of language models.

The library holds everything the stages in ``stages/`` share: model loading (``models``),
hooks at TransformerLens hook points on the plain HF model (``hooks``), batched activation
capture (``activations``) and steered generation (``generation``), the reasoning-step data set
(``steps``, ``labels``, ``prompts``), judges (``judge``), statistics (``stats``) and atomic
storage of outputs (``storage``).
"""

__version__ = "0.1.0"
