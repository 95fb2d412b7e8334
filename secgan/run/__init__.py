"""What one training run is made of (RunConfig: model, training, data, privacy), shared by the
in-process runner and the coordinator."""
