"""One module per `simplan` verb; each defines `register(subparsers)`."""
