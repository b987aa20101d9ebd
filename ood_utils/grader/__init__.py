"""The grader: release copies, the sandbox, notebook execution and grading (``python -m ood_utils
release`` / ``grade``). The top wing: it reads the answer key's registry and imports everything
below it; nothing below imports it."""
