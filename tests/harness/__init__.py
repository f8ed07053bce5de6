"""Real services for driver tests, started and stopped by session fixtures."""
