"""First-party plugins. Each subpackage is an entry point in the ``achilles`` group,
loaded exactly as a third-party plugin would be."""
