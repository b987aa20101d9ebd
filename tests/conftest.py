import os

import matplotlib

matplotlib.use("Agg")
os.environ.setdefault("OOD_PROFILE", "miniclip")

# Synthetic notebooks used by the grading/release tests are inputs, not notebooks to collect.
collect_ignore_glob = ["fixtures/*"]
