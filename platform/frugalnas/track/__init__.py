"""MLflow tracking. Only this package imports MLflow."""
