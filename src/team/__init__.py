"""The trial team stack of `make team-up`: PostgreSQL, an S3 server and the MLflow server, and its users."""
