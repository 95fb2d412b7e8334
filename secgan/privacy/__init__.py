"""Differential privacy: pure math (``accounting``), the durable ledger (``ledger``), the hash-chained
release log (``release_log``) and the site's policy (``policy``)."""
