"""Claude through the Message Batches API: resumable, cached, and the step labeller.

``message_batches`` (``ClaudeParams``; send each request once, collect every answer),
``answer_store`` (answers and the batch journal on disk, outside DVC's outputs),
``step_labels`` (the steps data set labelled by Claude, ``steps.labeller: anthropic``).
"""
