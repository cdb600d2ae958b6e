"""The domain core: configuration, database, models, the one run-status writer, services,
idempotency, crypto, notifications and the message contract between the API and the workers.

Used by the web layer (`app`) and the workers; imports neither. Importing it starts nothing.
"""
