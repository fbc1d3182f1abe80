"""Market data sources (pure core): sample replay, Yahoo, Polygon, Alpha Vantage, fallback chain."""
