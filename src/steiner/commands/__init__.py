"""One module per `steiner` subcommand, each exposing ``register(subparsers)``."""
