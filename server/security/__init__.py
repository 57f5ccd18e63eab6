"""Security building blocks shared by the sidecars: at-rest encryption (:mod:`crypto`)."""
