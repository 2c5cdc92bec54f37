"""The contract suite: every section of the service contract, checked from outside the process."""
