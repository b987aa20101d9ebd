"""The course wing: profiles, data, the CLIP models (the tiny CLIP included), the feature cache,
the pipeline that computes each notebook's inputs, the CAC experiment, sweeps, plots and the
results table. The only wing that knows profiles and folders; it imports :mod:`ood_utils.methods`
and nothing above it."""
