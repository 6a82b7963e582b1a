"""Reconciling a commit with the store: read desired (git) and recorded (store), pair,
diff, plan, and apply in one transaction."""
