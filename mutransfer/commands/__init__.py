"""One module per `mutransfer` subcommand; each defines ``register(subparsers)`` and ``run(args)``."""
