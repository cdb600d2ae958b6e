"""Use cases shared by the API and the CLI: runs, devices, keys. They raise core.errors, never HTTP ones."""
