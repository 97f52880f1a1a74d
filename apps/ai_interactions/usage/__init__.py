"""AI usage: hourly rollups of interactions (services) and exact usage reports (selectors)."""
