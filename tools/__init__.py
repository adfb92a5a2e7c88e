"""Developer tools: the Grafana dashboard generator and the dashboard renderer."""
