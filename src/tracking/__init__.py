"""Everything MLflow: the client, tag keys, stage records and nested runs, parent runs, the registry."""
