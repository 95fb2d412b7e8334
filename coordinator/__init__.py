"""The generator coordinator: site registry, round scheduler, aggregation, G optimisation, checkpoints."""
