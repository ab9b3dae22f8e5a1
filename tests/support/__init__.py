"""Helpers shared by every test area, each defined once: ports and polling (``net``), test
images (``images``), child processes (``processes``), a real redis-server (``redis_server``),
Prometheus scraping (``metrics``), HTTP request helpers (``api``) and a fake inference backend
(``fake_backend``)."""
