"""The ``achilles`` command line: ``main.py`` builds the click group, ``commands/`` holds one module
per command, ``options.py`` the options they share, ``completion.py`` shell completion of names,
``table.py`` terminal tables and ``log_output.py`` how log lines reach the terminal.

May import every other folder; nothing imports it but the console script and a plugin's commands
(``achilles.cli.options.verbosity_option``, ``achilles.cli.table.format_table``).
"""
