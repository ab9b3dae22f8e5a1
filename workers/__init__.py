"""The Redis Streams worker pool: ``insid3 worker`` processes fed by any number of API processes."""
