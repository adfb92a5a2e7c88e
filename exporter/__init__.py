"""backup-exporter: one Prometheus schema over Keepit, AvePoint, Commvault and Veeam."""

__version__ = "0.1.0"
