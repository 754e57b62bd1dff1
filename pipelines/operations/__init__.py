"""Operations: service levels as code, the alert rules Prometheus evaluates, and their checks."""
