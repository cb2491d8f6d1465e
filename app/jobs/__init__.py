"""RQ jobs. A job receives ids, not ORM objects, is safe to run twice, and reports
progress in its job metadata (``meta["progress"]``)."""
