"""The ``achilles`` command line: ``main.py`` builds the click group, ``commands/`` holds one module
per command, ``options.py`` the options they share, ``completion.py`` shell completion of names,
``table.py`` terminal tables and ``plugin_commands.py`` the plugins' commands (how log lines
reach the terminal, in the CLI and in sweep workers alike, is ``achilles/logs.py``).

May import every other folder; nothing imports it but the console script and a plugin's commands
(``achilles.cli.options.verbosity_option``, ``achilles.cli.table.format_table``).
"""
