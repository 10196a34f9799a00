"""One module per ``varformer`` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``.

Commands only parse arguments and call into the package; the logic lives in the package modules.
"""
